-- wrk script for the proxy benchmark: one POST, the same for the proxy and the baseline.
-- Inputs (environment): BENCH_BODY (file with the JSON body), BENCH_KEY (X-Lectr-Key),
-- BENCH_MODE (X-Bench-Mode, picks the canned upstream answer; "" for JSON).
-- Output: one line "BENCH_JSON {...}" with counts and the latency distribution in microseconds.

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

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"mean":%.1f,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.mean, latency.max))
end
