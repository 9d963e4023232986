# segment: Segment-spec calls (track, identify, page, screen) as Segment's and RudderStack's webhook
# destinations send them. Documented in docs/presets.md.
#
# The user: userId as external_id; else the alias {alias_name: anonymousId, alias_label:
# $args.anonymous_alias_label (default "anonymous_id")}.
# track: a custom event (name: event, properties); an event in $args.purchase_events (default
# ["Order Completed"], Segment's e-commerce spec) is its revenue instead: one purchase per product
# (products[]: product_id, else sku; price; quantity; currency of the event, else
# $args.currency_default, else USD, Segment's own default), or one purchase of the event's revenue
# (or total) when it lists no products.
# identify: profile attributes from traits (RudderStack sends them in context.traits): Segment's
# reserved traits as Braze's standard attributes, every other trait as a custom attribute.
# page and screen: a custom event "Viewed <category> <name> Page|Screen" ("Loaded a Page|Screen"
# without a name), or $args.page_event / $args.screen_event, properties with name and category.
# An alias's track, page or screen call first updates the attribute anonymous_id
# ($args.alias_attribute) of the alias: Braze takes an alias's events and purchases only once its
# profile exists ($args.create_alias_profile = false: no such update).
# group, alias and other calls make no record. In a user_identifying route: an identify call with
# both userId and anonymousId becomes an identify of that alias; every other call makes no record.

def nonempty: select(. != null and . != "");
def text: if type == "string" then . else tostring end;
def compact: with_entries(select(.value != null));
# Braze takes at most 100 of one product in a purchase object: larger quantities are split.
def quantities: (. // 1 | tonumber? // 1) as $q
  | if $q <= 0 then 1 elif $q <= 100 then $q else (range(0; $q; 100) as $start | [$q - $start, 100] | min) end;

(($args.anonymous_alias_label // "anonymous_id")) as $label
| (.type // "" | ascii_downcase) as $call
| (.timestamp // .originalTimestamp // .sentAt // .receivedAt) as $time
| (.userId // "" | text) as $user_id
| (.anonymousId // "" | text) as $anonymous_id
| if $route.mode == "user_identifying" then
    select($call == "identify" and $user_id != "" and $anonymous_id != "")
    | {external_id: $user_id, alias_name: $anonymous_id, alias_label: $label}
  else
    (if $user_id != "" then {external_id: $user_id}
     elif $anonymous_id != "" then {user_alias: {alias_name: $anonymous_id, alias_label: $label}}
     else error("segment: the \($call) call has neither userId nor anonymousId")
     end) as $user
    | ({time: $time} | compact) as $when
    # Braze takes an alias's events and purchases only once its profile exists: create it first.
    | (if $user.user_alias and $args.create_alias_profile != false and ($call | IN("track", "page", "screen")) then
         $user + $when + {track_record_type: "user_profile_attributes", ($args.alias_attribute // "anonymous_id"): $anonymous_id}
       else empty end),
      (if $call == "track" then
        (.properties // {}) as $props
        | if (.event | IN(($args.purchase_events // ["Order Completed"])[])) then
            ($props.currency // $args.currency_default // "USD") as $currency
            | ($props | {order_id, checkout_id, affiliation, coupon} | compact) as $order
            | if ($props.products // []) | length > 0 then
                $props.products[]
                | . as $product
                | ($product.quantity | quantities) as $quantity
                | $user + $when + {
                    track_record_type: "purchases",
                    product_id: ($product.product_id // $product.sku // $product.id // $product.name // "unknown" | text),
                    price: ($product.price // 0),
                    currency: ($product.currency // $currency),
                    quantity: $quantity,
                    properties: ($order + ($product | del(.product_id, .price, .quantity, .currency)))
                  }
              else
                $user + $when + {
                  track_record_type: "purchases",
                  product_id: (.event | text),
                  price: ($props.revenue // $props.total // 0),
                  currency: $currency,
                  properties: ($props | del(.revenue, .total, .currency, .products))
                }
              end
          else
            $user + $when + {track_record_type: "custom_events", name: (.event // "" | text), properties: $props}
          end
      elif $call == "identify" then
        ((.context.traits // {}) + (.traits // {})) as $traits
        | select($traits | length > 0)
        | ($traits.address // {}) as $address
        | ($traits.gender // null | if type == "string" then ascii_downcase else . end
           | if . == null then null
             elif IN("m", "male", "man") then "M" elif IN("f", "female", "woman") then "F"
             elif IN("o", "other", "non-binary", "nonbinary") then "O"
             elif IN("n", "not applicable") then "N" elif IN("p", "prefer not to say") then "P"
             else $traits.gender end) as $gender
        | ({
            first_name: ($traits.firstName // $traits.first_name),
            last_name: ($traits.lastName // $traits.last_name),
            email: $traits.email,
            phone: $traits.phone,
            dob: ($traits.birthday // null | if type == "string" then .[0:10] else . end),
            gender: $gender,
            home_city: ($address.city // null),
            country: ($address.country // null),
            image_url: $traits.avatar
          } | compact) as $standard
        | ($traits | del(.firstName, .first_name, .lastName, .last_name, .email, .phone, .birthday, .gender, .avatar, .id, .userId, .anonymousId)) as $custom
        | $user + $when + {track_record_type: "user_profile_attributes"} + $custom + $standard
      elif $call == "page" or $call == "screen" then
        (if $call == "page" then "Page" else "Screen" end) as $what
        | ([.category, .name] | map(nonempty | text) | join(" ")) as $title
        | (if $call == "page" then $args.page_event else $args.screen_event end) as $fixed
        | $user + $when + {
            track_record_type: "custom_events",
            name: ($fixed // (if $title == "" then "Loaded a \($what)" else "Viewed \($title) \($what)" end)),
            properties: ((.properties // {}) + ({name, category} | compact))
          }
      else
        empty
      end)
  end
