-- POST a body of WRK_BODY_BYTES bytes (default 1 MiB) on every request; wrk adds the Content-Length.
local size = tonumber(os.getenv("WRK_BODY_BYTES") or "1048576")
wrk.method = "POST"
wrk.body = string.rep("u", size)
wrk.headers["Content-Type"] = "application/octet-stream"
