// The demo page's buttons: one td-js-sdk client per route, each with that route's own (public) key.
(function () {
  'use strict'
  var config = window.RELAY_DEMO
  var GROUP = 'demo_newsletter'

  function $ (id) { return document.getElementById(id) }

  function client (route) {
    return new window.Treasure({ database: route.database, writeKey: route.writeKey, endpoint: config.endpoint })
  }

  function say (what, ok, text) {
    var line = document.createElement('li')
    line.className = ok ? 'ok' : 'fail'
    line.dataset.what = what
    line.textContent = new Date().toLocaleTimeString() + '  ' + what + ': ' + text
    $('log').prepend(line)
  }

  function send (td, route, record, what) {
    var id = $('external-id').value.trim()
    td.set('$global', { external_id: id })
    td.addRecord(
      route.table,
      record,
      function (answer) { say(what, true, 'stored, ' + JSON.stringify(answer)) },
      function (error) {
        say(what, false, String(error) + ' (refused by the relay or by the browser: see the console)')
      }
    )
  }

  var events = client(config.events)
  var consent = client(config.consent)
  $('sdk-version').textContent = window.Treasure.version
  $('endpoint').textContent = config.endpoint
  $('events-route').textContent = config.events.route
  $('events-table').textContent = config.events.table
  $('consent-route').textContent = config.consent.route
  $('consent-table').textContent = config.consent.table
  var allowed = config.events.allowedOrigins.indexOf(window.location.origin) >= 0
  $('origin').textContent = allowed
    ? 'This page\'s origin, ' + window.location.origin + ', is in the routes\' allowed_origins.'
    : 'This page\'s origin, ' + window.location.origin + ', is NOT in allowed_origins (' +
      config.events.allowedOrigins.join(', ') + '): the browser will refuse to send.'
  $('origin').className = allowed ? '' : 'warn'

  if (config.brazeUsers) {
    var link = document.createElement('a')
    link.id = 'braze-user'
    link.textContent = 'What the sandbox Braze holds for this user'
    var update = function () { link.href = config.brazeUsers + encodeURIComponent($('external-id').value.trim()) }
    update()
    $('external-id').addEventListener('input', update)
    $('braze').appendChild(link)
  }

  $('send-event').addEventListener('click', function () {
    send(events, config.events, { name: 'demo_button_clicked', page: window.location.pathname }, 'event')
  })
  $('subscribe').addEventListener('click', function () {
    send(consent, config.consent, { subscription_group_id: GROUP, subscription_state: 'subscribed' }, 'consent')
  })
  $('unsubscribe').addEventListener('click', function () {
    send(consent, config.consent, { subscription_group_id: GROUP, subscription_state: 'unsubscribed' }, 'consent')
  })
})()
