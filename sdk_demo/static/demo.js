// The demo page: one td-js-sdk client, used as TD's docs say (trackEvent, the consent manager).
(function () {
  'use strict'
  var config = window.RELAY_DEMO
  var routes = config.routes
  var CONTEXT = { brand: 'braze-relay demo', domain_name: window.location.hostname, collection_type: 'demo page', collection_point_id: 'sdk_demo' }

  function $ (id) { return document.getElementById(id) }

  function say (what, ok, text) {
    var line = document.createElement('li')
    line.className = ok ? 'ok' : 'fail'
    line.dataset.what = what
    line.textContent = new Date().toLocaleTimeString() + '  ' + what + ': ' + text
    $('log').prepend(line)
  }

  function refused (error) {
    return String(error) + ' (refused by the relay, or by the browser: see the console)'
  }

  var td = new window.Treasure({
    database: config.database,
    writeKey: config.writeKey,
    endpoint: config.endpoint,
    consentManager: { consentTable: routes.consent.table, contextTable: routes.contexts.table }
  })
  window.td = td // for trying more calls in the browser's console
  td.setSignedMode()

  // saveConsents and saveContexts send each record with addConsentRecord, whose callbacks get the
  // relay's answer (saveConsents' own callback gets only the consents): wrapped to show each answer.
  // What is sent does not change.
  var addConsentRecord = td.addConsentRecord
  td.addConsentRecord = function (table, record, success, error) {
    var what = table === routes.consent.table ? 'consent ' + record.purpose + ' ' + record.status : 'context'
    addConsentRecord.call(td, table, record,
      function (answer) { say(what, true, table + ': stored, ' + JSON.stringify(answer)); success(answer) },
      function (problem) { say(what, false, table + ': ' + refused(problem)); error(problem) })
  }

  // The page's consent context and one consent per purpose the relay maps, made once per browser
  // (the consent manager keeps them in localStorage); nothing is sent until the visitor decides.
  var context = td.getContexts().filter(function (c) { return c.collection_point_id === CONTEXT.collection_point_id })[0]
  var contextId = context ? context.context_id : td.addContext(CONTEXT)
  var known = td.consentManager.preferences[contextId].consents
  var missing = {}
  Object.keys(config.purposes).forEach(function (purpose) {
    if (!known[purpose]) {
      missing[purpose] = { description: 'braze-relay demo: ' + purpose, datatype: 'demo', status: td.consentManager.states.NOTGIVEN, context_id: contextId }
    }
  })
  td.addConsents(missing)

  function status (purpose) { return td.consentManager.preferences[contextId].consents[purpose].status }

  function decide (purpose, decision) {
    var change = {}
    change[purpose] = { status: decision }
    td.updateConsent(contextId, change)
    td.saveContexts()
    td.saveConsents(
      function () { $('status-' + purpose).textContent = status(purpose) },
      function (problem) { say('consent ' + purpose, false, JSON.stringify(problem)) }
    )
  }

  Object.keys(config.purposes).forEach(function (purpose) {
    var row = document.createElement('tr')
    var target = config.purposes[purpose]
    var sets = (target === 'email_subscribe' || target === 'push_subscribe') ? target : 'subscription group ' + target
    ;[purpose, sets, status(purpose)].forEach(function (text, index) {
      var cell = document.createElement('td')
      cell.textContent = text
      if (index === 2) cell.id = 'status-' + purpose
      row.appendChild(cell)
    })
    var buttons = document.createElement('td')
    ;[['given', 'Give'], ['refused', 'Refuse']].forEach(function (choice) {
      var button = document.createElement('button')
      button.type = 'button'
      button.id = choice[0] + '-' + purpose
      button.textContent = choice[1]
      button.addEventListener('click', function () { decide(purpose, choice[0]) })
      buttons.appendChild(button)
    })
    row.appendChild(buttons)
    $('purposes').appendChild(row)
  })

  var clientId = td.client.track.uuid
  $('sdk-version').textContent = window.Treasure.version
  $('endpoint').textContent = config.endpoint
  $('alias').textContent = JSON.stringify({ alias_name: clientId, alias_label: config.aliasLabel })
  $('events-route').textContent = routes.events.route
  $('events-table').textContent = routes.events.table
  $('consent-route').textContent = routes.consent.route
  $('consent-table').textContent = routes.consent.table
  $('contexts-route').textContent = routes.contexts.route
  $('contexts-table').textContent = routes.contexts.table
  var allowed = config.allowedOrigins.indexOf(window.location.origin) >= 0
  $('origin').textContent = allowed
    ? 'This page\'s origin, ' + window.location.origin + ', is in the routes\' allowed_origins.'
    : 'This page\'s origin, ' + window.location.origin + ', is NOT in allowed_origins (' +
      config.allowedOrigins.join(', ') + '): the browser will refuse to send.'
  $('origin').className = allowed ? '' : 'warn'

  function externalId () { return $('external-id').value.trim() }

  if (config.braze) { // the sandbox: the simulator shows what Braze holds
    var browser = document.createElement('a')
    browser.id = 'braze-alias'
    browser.href = config.braze.aliases + encodeURIComponent(clientId)
    browser.textContent = 'This browser (its alias) in the sandbox Braze: events, consents'
    var user = document.createElement('a')
    user.id = 'braze-user'
    var update = function () {
      user.href = config.braze.users + encodeURIComponent(externalId())
      user.textContent = 'The user ' + externalId() + ' in the sandbox Braze: events'
      user.hidden = !externalId()
    }
    update()
    $('external-id').addEventListener('input', update)
    $('braze').appendChild(browser)
    $('braze').appendChild(user)
  }

  $('send-event').addEventListener('click', function () {
    td.set('$global', 'external_id', externalId() || undefined)
    td.trackEvent(
      routes.events.table,
      { event: 'demo_button_clicked', button: 'send-event' },
      function (answer) { say('event', true, routes.events.table + ': stored, ' + JSON.stringify(answer)) },
      function (problem) { say('event', false, routes.events.table + ': ' + refused(problem)) }
    )
  })
})()
