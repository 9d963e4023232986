# shopify_orders: Shopify's orders/create and orders/paid webhooks (the Order resource). Subscribe the
# route to one of the two: both carry the whole order, and each would record its purchases.
# Documented in docs/presets.md.
#
# The user: the customer's id as external_id ($args.identifier = "email": the order's email
# instead); an order without a customer (a guest checkout) is identified by its email.
# One purchase per line item: product_id the line's product_id ($args.product_id: "sku",
# "variant_id" or "title" instead; the title when the line has none), price the unit price,
# quantity (over 100 split, Braze's limit), currency the order's (else $args.currency_default),
# time processed_at (else created_at), properties order_id, order_number, order_name, line_item_id,
# variant_id, sku, title, vendor, total_discount. Ids are sent as strings: Shopify's exceed 2^53.
# One attribute update: first_name, last_name, email, phone, home_city and country of the customer.
# $args.order_event: also a custom event of that name with the order's totals.
# $args.skip_test_orders: test orders make no record.

def text: if type == "string" then . else tostring end;
def compact: with_entries(select(.value != null and .value != ""));
def quantities: (. // 1 | tonumber? // 1) as $q
  | if $q <= 0 then 1 elif $q <= 100 then $q else (range(0; $q; 100) as $start | [$q - $start, 100] | min) end;

. as $order
| select(($args.skip_test_orders != true) or ($order.test != true))
| ($order.customer // {}) as $customer
| ($order.email // $order.contact_email // $customer.email // null) as $email
| (if ($args.identifier // "customer_id") == "email" or $customer.id == null then
     (if $email == null or $email == "" then error("shopify_orders: order \($order.id | tostring) has no customer id and no email") else {email: $email} end)
   else {external_id: ($customer.id | text)} end) as $user
| ($order.processed_at // $order.created_at) as $time
| ($order.currency // $order.presentment_currency // $args.currency_default) as $currency
| ({order_id: ($order.id | text?), order_number: $order.order_number, order_name: $order.name} | compact) as $ids
| (
    # The customer as Braze's standard attributes.
    ({
      first_name: ($customer.first_name // $order.billing_address.first_name),
      last_name: ($customer.last_name // $order.billing_address.last_name),
      email: (if $user.email then null else ($customer.email // $email) end),
      phone: $customer.phone,
      home_city: $customer.default_address.city,
      country: $customer.default_address.country_code
    } | compact) as $attributes
    | select($attributes | length > 0)
    | $user + {track_record_type: "user_profile_attributes", time: $time} + $attributes
  ),
  (
    ($order.line_items // [])[]
    | . as $line
    | ($args.product_id // "product_id") as $key
    | ($line[$key] // $line.title // $line.name) as $product
    | if $product == null then error("shopify_orders: line item \($line.id | tostring) has no \($key) and no title") else . end
    | ($line.quantity | quantities) as $quantity
    | $user + {
        track_record_type: "purchases",
        time: $time,
        product_id: ($product | text),
        price: $line.price,
        currency: ($currency // error("shopify_orders: order \($order.id | tostring) has no currency (set transform_args.currency_default)")),
        quantity: $quantity,
        properties: ($ids + ({
          line_item_id: ($line.id | text?),
          variant_id: ($line.variant_id | if . == null then null else text end),
          sku: $line.sku,
          title: $line.title,
          vendor: $line.vendor,
          total_discount: $line.total_discount
        } | compact))
      }
  ),
  (
    select($args.order_event != null)
    | $user + {
        track_record_type: "custom_events",
        name: $args.order_event,
        time: $time,
        properties: ($ids + ({
          total_price: $order.total_price,
          subtotal_price: $order.subtotal_price,
          total_discounts: $order.total_discounts,
          total_tax: $order.total_tax,
          currency: $currency,
          financial_status: $order.financial_status,
          line_items: ($order.line_items // [] | length),
          discount_codes: ([($order.discount_codes // [])[] | .code // empty] | if length == 0 then null else . end)
        } | compact))
      }
  )
