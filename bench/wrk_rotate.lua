-- wrk script of benchmark 2 (bench/bench_http.py).
-- Usage: wrk ... -s bench/wrk_rotate.lua http://HOST:PORT -- URLS_FILE [TOKEN]
-- Each request takes the next path of URLS_FILE (one a line), every wrk thread
-- starting at a different place; TOKEN, when given, is sent as a bearer token.
-- At the end one line "BENCH_JSON {...}" gives the counts and latency
-- percentiles in microseconds, for the benchmark to read.

local threads = {}

function setup(thread)
   thread:set("thread_no", #threads)
   table.insert(threads, thread)
end

local paths = {}
local position = 0
local headers = {}

function init(args)
   for line in io.lines(args[1]) do
      if #line > 0 then
         paths[#paths + 1] = line
      end
   end
   if args[2] ~= nil and #args[2] > 0 then
      headers["Authorization"] = "Bearer " .. args[2]
   end
   -- Spread the threads over the list (thread_no is set by setup() before init runs).
   position = ((thread_no or 0) * 7919) % #paths
end

function request()
   position = position + 1
   if position > #paths then
      position = 1
   end
   return wrk.format("GET", paths[position], headers)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors_connect":%d,"errors_read":%d,' ..
      '"errors_write":%d,"errors_status":%d,"errors_timeout":%d,"p50_us":%d,"p75_us":%d,"p90_us":%d,' ..
      '"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,"stdev_us":%.1f}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(75), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean, latency.stdev))
end
