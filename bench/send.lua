-- wrk script for bench/run.sh: the same POST /send request for every target, and one
-- machine-readable result line at the end.
--
-- Environment (set by run.sh):
--   BENCH_TOKEN     the caller token sent as `Authorization: Bearer <token>`
--   BENCH_BODY      the JSON body (default: a text message)
--   BENCH_PACE_MS   if set and > 0: each connection waits this many milliseconds before each
--                   request (paced load; wrk measures latency from the write, not from the wait)
--
-- Keep-alive: wrk keeps every connection open for the whole run (HTTP/1.1, no Connection: close).

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
    or '{"to":"+918080808080","type":"text","text":"Your OTP is 4711"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_TOKEN") or "")

local pace = tonumber(os.getenv("BENCH_PACE_MS") or "0") or 0
if pace > 0 then
    delay = function()
        return pace
    end
end

done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,'
            .. '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,'
            .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency:percentile(99.9), latency.max, latency.mean))
end
