-- wrk script for the proxy benchmark: one POST, the same for the proxy and the baseline.
-- Inputs (environment): BENCH_BODY (file with the JSON body), BENCH_KEY (X-Lectr-Key),
-- BENCH_MODE (X-Bench-Mode, picks the canned upstream answer; "" for JSON).
-- Output: one line "BENCH_JSON {...}" with counts and the latency distribution in microseconds
-- (and with BENCH_TIMED=1 a line "BENCH_HIST ...", below).

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

wrk.method = "POST"
wrk.body = read_file(os.getenv("BENCH_BODY"))
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
local key = os.getenv("BENCH_KEY") or ""
if key ~= "" then wrk.headers["X-Lectr-Key"] = key end
local mode = os.getenv("BENCH_MODE") or ""
if mode ~= "" then wrk.headers["X-Bench-Mode"] = mode end

-- BENCH_TIMED=1: also time each request from the client's side (LuaJIT's FFI and the monotonic
-- clock, from handing the request to wrk to its response) and print the raw distribution as
-- "BENCH_HIST us:count,...". wrk's own percentiles include its coordinated-omission correction:
-- after the run it adds, for every sample longer than the mean interval, synthetic samples one
-- interval apart below it. At 1 request in flight there is no schedule to fall behind, and one
-- 10 ms stall of a 0.7 ms-per-request server becomes ~14 samples; the raw distribution is the
-- latency each request had.
local timed = os.getenv("BENCH_TIMED") == "1"
local threads = {}
if timed then
  local ffi = require("ffi")
  ffi.cdef[[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clk_id, bench_timespec *tp);
  ]]
  local now = ffi.new("bench_timespec")
  local function now_us()
    ffi.C.clock_gettime(1, now) -- CLOCK_MONOTONIC
    return tonumber(now.tv_sec) * 1000000 + tonumber(now.tv_nsec) / 1000
  end
  local prepared, started = nil, 0
  hist = {}
  request = function()
    prepared = prepared or wrk.format()
    started = now_us()
    return prepared
  end
  response = function(status, headers, body)
    local us = math.floor(now_us() - started)
    hist[us] = (hist[us] or 0) + 1
  end
  setup = function(thread) threads[#threads + 1] = thread end
end

done = function(summary, latency, requests)
  if timed then
    local parts = {}
    for _, thread in ipairs(threads) do
      for us, count in pairs(thread:get("hist")) do parts[#parts + 1] = us .. ":" .. count end
    end
    io.write("BENCH_HIST " .. table.concat(parts, ",") .. "\n")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"mean":%.1f,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.mean, latency.max))
end
