# td_js_sdk: records of TD's browser SDK (td-js-sdk 4.x: addRecord, trackEvent, trackPageview).
#
# The user: the field $args.external_id_field (default "external_id") the page set with
# td.set('$global', {external_id: ...}); else the alias {alias_name: td_client_id, alias_label:
# $args.alias_label (default "td_client_id")} (the SDK sends td_client_id in signed mode only).
# custom_events (the route's default, or the record's own track_record_type): the name from the
# record's `name` or `event`, else the route's table; every other field is a property, td_* fields
# dropped but for td_url, td_title and td_referrer, kept as page_url, page_title and page_referrer.
# purchases: product_id, price, currency, quantity as the record has them; the rest are properties.
# user_profile_attributes: every field but td_* fields is an attribute; utm_* fields (td-js-sdk 4.4
# puts the page's UTM parameters in $global, so in every record) only with $args.utm_attributes =
# true: each would be a billable custom attribute of its own.
# Braze takes an alias's events and purchases only once its profile exists (update-only for an
# alias), so an alias's event or purchase comes after an attribute update that creates it:
# {web_client_id: td_client_id} ($args.alias_attribute names it; $args.create_alias_profile = false: none).
# Documented in docs/presets.md.

($args.external_id_field // "external_id") as $id_field
| ($args.alias_label // "td_client_id") as $label
| . as $record
| ($record[$id_field] // "" | tostring) as $external_id
| (if $external_id != "" then {external_id: $external_id}
   elif ($record.td_client_id // "" | tostring) != "" then
     {user_alias: {alias_name: ($record.td_client_id | tostring), alias_label: $label}}
   else
     error("td_js_sdk: no user: set td.set('$global', {\($id_field): ...}) on the page, or use signed mode so the SDK sends td_client_id")
   end) as $user
| ($record.track_record_type // $route.track_record_type // "custom_events") as $type
| ({page_url: $record.td_url, page_title: $record.td_title, page_referrer: $record.td_referrer}
   | with_entries(select(.value != null and .value != ""))) as $page
# Identifiers and TD's own fields are not properties or attributes.
| ($record
   | with_entries(select((.key | startswith("td_") | not)
       and (.key | IN($id_field, "external_id", "user_alias", "braze_id", "alias_name", "alias_label", "track_record_type") | not)))
  ) as $fields
| ($args.alias_attribute // "web_client_id") as $alias_attribute
| (if $user.user_alias and $args.create_alias_profile != false and $type != "user_profile_attributes" then
     $user + {track_record_type: "user_profile_attributes", ($alias_attribute): $user.user_alias.alias_name}
       + (if $record.time != null then {time: $record.time} else {} end)
   else empty end),
  (if $type == "user_profile_attributes" then
    $user
    + (if $args.utm_attributes == true then $fields
       else $fields | with_entries(select(.key | startswith("utm_") | not)) end)
    + {track_record_type: $type}
  elif $type == "purchases" then
    ($fields | del(.email, .phone)) as $rest
    | $user + ($rest | {product_id, price, currency, quantity, time} | with_entries(select(.value != null)))
      + {properties: (($rest | del(.product_id, .price, .currency, .quantity, .time, .properties))
                      + ($rest.properties // {}) + $page),
         track_record_type: $type}
  else
    ($fields | del(.email, .phone)) as $rest
    | ($rest.name // $rest.event // $route.table) as $name
    | if $name == null or $name == "" then error("td_js_sdk: no event name: the record has no name or event, and the route no table") else . end
    | $user + {name: $name, track_record_type: "custom_events"}
      + (if $rest.time != null then {time: $rest.time} else {} end)
      + {properties: (($rest | del(.name, .event, .time, .properties)) + ($rest.properties // {}) + $page)}
  end)
