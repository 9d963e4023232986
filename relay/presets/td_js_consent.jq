# td_js_consent: consent records of td-js-sdk's consent extension (saveConsents/addConsentRecord:
# {description, datatype, status, expiry_date, issuer, identifier, purpose, context_id}).
#
# The user: the alias {alias_name: identifier (the SDK's td_client_id), alias_label:
# $args.alias_label (default "td_client_id")}. $args.purposes maps a purpose to a subscription
# group id, or to "email_subscribe" / "push_subscribe". Status given -> subscribed ($args.given_state
# may say "opted_in" for email_subscribe/push_subscribe), refused and expired -> unsubscribed,
# notgiven -> no record. A purpose $args.purposes does not name, and a record that is not a consent
# (no purpose or status: a context record), make no record. Documented in docs/presets.md.

($args.alias_label // "td_client_id") as $label
| ($args.purposes // {}) as $purposes
| select((.purpose // "") != "" and (.status // "") != "")
| ($purposes[.purpose | tostring] // null) as $target
| select($target != null)
| (.status | ascii_downcase) as $status
| (if $status == "given" then "subscribed"
   elif $status == "refused" or $status == "expired" then "unsubscribed"
   elif $status == "notgiven" then null
   else error("td_js_consent: unknown consent status \(.status | tojson) (given, refused, notgiven, expired)")
   end) as $state
| select($state != null)
| if (.identifier // "" | tostring) == "" then error("td_js_consent: the consent record has no identifier") else . end
| {user_alias: {alias_name: (.identifier | tostring), alias_label: $label}}
  + if $target == "email_subscribe" or $target == "push_subscribe" then
      {($target): (if $state == "subscribed" then ($args.given_state // "subscribed") else $state end)}
    else
      {subscription_group_id: ($target | tostring), subscription_state: $state}
    end
