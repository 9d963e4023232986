-- wrk script: POST a fresh one-record TD postback per request.
--
-- Each body carries a unique `id` and the send time `sent_at` (UNIX seconds, float): both become
-- event properties in Braze, so the bench can match what Braze received to what was sent.
-- BENCH_SHAPE=segment sends the same event as a Segment track call ({"type": "track", "userId",
-- "event", "properties"}), for a route with preset = "segment" (bench/transform.py).
-- Environment: BENCH_WRITE_KEY (X-TD-Write-Key), BENCH_RUN (prefix of ids and users),
-- BENCH_STATUS_HOOK=1 to count answers per status code (costs wrk some CPU; off by default:
-- wrk's own summary already counts answers >= 400 and socket errors).
-- done() prints one line `BENCH_JSON {...}` that bench/common.py parses.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_usec; } bench_timeval;
int gettimeofday(bench_timeval *tv, void *tz);
]])
local tv = ffi.new("bench_timeval")

local function now()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) + tonumber(tv.tv_usec) / 1e6
end

local write_key = os.getenv("BENCH_WRITE_KEY") or "bench-write-key"
local run = os.getenv("BENCH_RUN") or "run"
local headers = { ["Content-Type"] = "application/json", ["X-TD-Write-Key"] = write_key }

local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

counter = 0
statuses = {}

local shape = '{"external_id":"%s-u%d","name":"bench_event","id":"%s-%d-%d","sent_at":%.6f}'
if os.getenv("BENCH_SHAPE") == "segment" then
  shape = '{"type":"track","userId":"%s-u%d","event":"bench_event","properties":{"id":"%s-%d-%d","sent_at":%.6f}}'
end

function request()
  counter = counter + 1
  local body = string.format(shape, run, counter % 1000, run, tid, counter, now())
  return wrk.format("POST", nil, headers, body)
end

if os.getenv("BENCH_STATUS_HOOK") == "1" then
  function response(status, _, _)
    statuses[status] = (statuses[status] or 0) + 1
  end
end

function done(summary, latency, _)
  local by_status = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses") or {}
    for status, count in pairs(counts) do
      by_status[status] = (by_status[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(by_status) do
    table.insert(parts, string.format('"%d":%d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,'
      .. '"write":%d,"status":%d,"timeout":%d},"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,'
      .. '"mean":%.1f},"by_status":{%s}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    table.concat(parts, ",")
  ))
end
