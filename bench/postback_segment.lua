-- wrk script: POST a fresh one-record postback shaped as a Segment track call per request.
--
-- The same event as bench/postback.lua sends (user, event name, `id` and `sent_at` properties), in
-- Segment's shape: {"type": "track", "userId", "event", "properties"}, for a route with
-- preset = "segment". Environment: BENCH_WRITE_KEY, BENCH_RUN (as postback.lua).
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

local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

counter = 0

function request()
  counter = counter + 1
  local body = string.format(
    '{"type":"track","userId":"%s-u%d","event":"bench_event","properties":{"id":"%s-%d-%d","sent_at":%.6f}}',
    run, counter % 1000, run, tid, counter, now()
  )
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,'
      .. '"write":%d,"status":%d,"timeout":%d},"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,'
      .. '"mean":%.1f},"by_status":{}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean
  ))
end
