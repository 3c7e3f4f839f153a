-- wrk script of the benchmark harness (bench/load.py). Configured through the environment:
--   BENCH_HOST     Host header (nginx serves only its server_name)
--   BENCH_TOKENS   comma-separated API tokens; requests rotate through them (one per user)
--   BENCH_MODE     static (same request every time: fastest for wrk), list, page, detail, create
--   BENCH_PATH     the path (static, list, page); detail adds an id from BENCH_ID_MIN..BENCH_ID_MAX
--   BENCH_COUNT_STATUS=1  count every response by status (the harness's quick check, BENCH_QUICK):
--                  off otherwise, as a response callback makes wrk parse every header
-- Prints one JSON line at the end: requests, seconds, req/s, latency percentiles (ms),
-- responses over 399 (wrk's "non2xx") and socket errors (connect, read, write, timeout); with
-- BENCH_COUNT_STATUS also 2xx responses, all others (3xx too), and responses with
-- "Connection: close" (each is one read error to wrk when the close ends the body).

local host = os.getenv("BENCH_HOST") or "localhost"
local mode = os.getenv("BENCH_MODE") or "static"
local path = os.getenv("BENCH_PATH") or "/"
local id_min = tonumber(os.getenv("BENCH_ID_MIN") or "1")
local id_max = tonumber(os.getenv("BENCH_ID_MAX") or "1")

local tokens = {}
for token in string.gmatch(os.getenv("BENCH_TOKENS") or "", "[^,]+") do
  tokens[#tokens + 1] = token
end

wrk.method = "GET"
wrk.path = path
wrk.headers["Host"] = host
if #tokens > 0 then
  wrk.headers["Authorization"] = "Token " .. tokens[1]
end

local counter = 0

local function next_headers()
  counter = counter + 1
  local headers = { ["Host"] = host }
  if #tokens > 0 then
    headers["Authorization"] = "Token " .. tokens[(counter % #tokens) + 1]
  end
  return headers
end

local count_status = os.getenv("BENCH_COUNT_STATUS") == "1"
local threads = {}

function setup(thread)
  thread:set("seed", math.random(1, 1000000))
  threads[#threads + 1] = thread
end

function init(args)
  math.randomseed(seed or os.time())
  counter = math.random(0, 1000)
  status_2xx, status_other, closed = 0, 0, 0
end

if count_status then
  function response(status, headers, body)
    if status >= 200 and status < 300 then
      status_2xx = status_2xx + 1
    else
      status_other = status_other + 1
    end
    for name, value in pairs(headers) do
      if string.lower(name) == "connection" and string.lower(value) == "close" then
        closed = closed + 1
      end
    end
  end
end

if mode == "detail" then
  request = function()
    local id = math.random(id_min, id_max)
    return wrk.format("GET", "/api/posts/" .. id .. "/", next_headers())
  end
elseif mode == "create" then
  request = function()
    local headers = next_headers()
    headers["Content-Type"] = "application/json"
    local body = string.format(
      '{"title":"bench post %d","body":"Written by the benchmark (wrk), request %d."}', counter, counter)
    return wrk.format("POST", "/api/posts/", headers, body)
  end
elseif mode ~= "static" then
  request = function()
    return wrk.format("GET", path, next_headers())
  end
end

-- The status counts of every thread, as JSON fields ("" unless BENCH_COUNT_STATUS).
function counts()
  if not count_status then
    return ""
  end
  local ok, other, close = 0, 0, 0
  for _, thread in ipairs(threads) do
    ok = ok + thread:get("status_2xx")
    other = other + thread:get("status_other")
    close = close + thread:get("closed")
  end
  return string.format(',"status_2xx":%d,"status_other":%d,"closed":%d', ok, other, close)
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"seconds":%.3f,"rps":%.2f,"bytes":%d,' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f,' ..
    '"non2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d',
    summary.requests, seconds, summary.requests / seconds, summary.bytes,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, latency.mean / 1000,
    e.status, e.connect, e.read, e.write, e.timeout), counts(), "}\n")
end
