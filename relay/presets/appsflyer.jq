# appsflyer: AppsFlyer Push API (V2.0) in-app event messages. Documented in docs/presets.md.
#
# The user: customer_user_id as external_id; else the alias {alias_name: appsflyer_id,
# alias_label: $args.alias_label (default "appsflyer_id")}.
# An event with revenue (event_revenue, else event_revenue_usd in USD) is a purchase: product_id
# event_value's af_content_id (else the event name), price the event's revenue (its total, so
# quantity 1; af_quantity stays a property), currency event_revenue_currency (else
# $args.currency_default, else USD), and the event name is its property af_event. Any other
# in-app event is a custom event named event_name.
# time: event_time (UTC, "yyyy-mm-dd hh:mm:ss.sss"). Properties: event_value's parameters, and
# event_type, media_source, campaign, platform, app_id, app_version, country_code, appsflyer_id
# when present. Install and re-attribution messages (event_name install, re-engagement,
# re-attribution, reinstall) make no record unless $args.include_installs is true.
# An alias's event or purchase comes after an update of its attribute appsflyer_id
# ($args.alias_attribute), which creates the profile Braze needs first ($args.create_alias_profile
# = false: none).

def number: if type == "number" then . elif type == "string" then (tonumber? // null) else null end;
def compact: with_entries(select(.value != null and .value != ""));

(.event_name // "" | tostring) as $name
| select($name != "")
| select(($args.include_installs == true) or ($name | IN("install", "re-engagement", "re-attribution", "reinstall") | not))
| (if (.customer_user_id // "" | tostring) != "" then {external_id: (.customer_user_id | tostring)}
   elif (.appsflyer_id // "" | tostring) != "" then
     {user_alias: {alias_name: (.appsflyer_id | tostring), alias_label: ($args.alias_label // "appsflyer_id")}}
   else error("appsflyer: the message has neither customer_user_id nor appsflyer_id")
   end) as $user
| (.event_value // {} | if type == "string" then (try fromjson catch {event_value: .}) else . end
   | if type == "object" then . else {event_value: .} end) as $params
| ({event_type, media_source, campaign, platform, app_id, app_version, country_code, appsflyer_id} | compact) as $context
| ({time: .event_time} | compact) as $when
| (.event_revenue | number) as $revenue
| (.event_revenue_usd | number) as $revenue_usd
# Braze takes an alias's events and purchases only once its profile exists: create it first.
| (if $user.user_alias and $args.create_alias_profile != false then
     $user + $when + {track_record_type: "user_profile_attributes", ($args.alias_attribute // "appsflyer_id"): $user.user_alias.alias_name}
   else empty end),
  (if ($revenue != null and $revenue != 0) or ($revenue == null and $revenue_usd != null and $revenue_usd != 0) then
    $user + $when + {
      track_record_type: "purchases",
      product_id: ($params.af_content_id // $name | tostring),
      price: ($revenue // $revenue_usd),
      currency: (if $revenue != null then (.event_revenue_currency // $args.currency_default // "USD") else "USD" end),
      quantity: 1,
      properties: ($params + $context + {af_event: $name})
    }
  else
    $user + $when + {track_record_type: "custom_events", name: $name, properties: ($params + $context)}
  end)
