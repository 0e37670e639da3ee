-- uplion's OpenAI edge (Envoy Lua filter, the first filter of the chain).
--
-- Requests: every x-uplion-* header a client sent is removed before any other filter reads one
-- (only the edge and ext_authz set them; the few a client may send are listed in CLIENT_HEADERS),
-- a header larger than MAX_HEADER_BYTES is refused with 431, and x-uplion-client-address is set to
-- the client address Envoy determined (authz's per-address budget of unknown keys). Every request
-- gets x-uplion-token-estimate (the tokens the rate limiter reserves for it), from its buffered body;
-- the gRPC methods whose request is a stream (STREAMING_REQUESTS: server reflection) are not
-- buffered, since their request does not end while the call waits for answers. The inference paths
-- reach the gateway as raw JSON (google.api.HttpBody RPCs): it reads "stream" itself and writes
-- OpenAI's bytes (JSON, or server-sent events ending in `data: [DONE]`).
-- Responses: no gRPC header or trailer reaches a REST client, and every error leaves in OpenAI's
-- shape {"error": {message, type, param, code}}. The gateway's own error object (trailing metadata
-- x-uplion-error) is used as is; errors Envoy makes itself (unknown path, body too large, upstream
-- down) are wrapped by status.

local GENERATES = {
  ["/v1/chat/completions"] = true, ["/v1/completions"] = true,
  ["/uplion.v1.InferenceService/HttpChatCompletions"] = true,
  ["/uplion.v1.InferenceService/HttpCompletions"] = true,
  ["/uplion.v1.InferenceService/CreateChatCompletion"] = true,
  ["/uplion.v1.InferenceService/StreamChatCompletion"] = true,
  ["/uplion.v1.InferenceService/CreateCompletion"] = true,
  ["/uplion.v1.InferenceService/StreamCompletion"] = true,
  ["/v1/responses"] = true,
  ["/uplion.v1.InferenceService/HttpCreateResponse"] = true,
  ["/uplion.v1.InferenceService/CreateResponse"] = true,
  ["/uplion.v1.InferenceService/StreamResponse"] = true,
}
-- Output tokens reserved when a request names no max_tokens (the rate limiter refunds what a
-- request does not use as soon as it finishes).
local DEFAULT_MAX_OUTPUT = 4096
local MAX_BODY_BYTES = __MAX_BODY_BYTES__ -- filled in by uplion.edge.filters
local ESTIMATE = "__TOKEN_ESTIMATE_HEADER__"
local PREFIX = "__TRUSTED_PREFIX__"
local PREFIX_LEN = string.len(PREFIX)
local CLIENT_HEADERS = { __CLIENT_HEADERS__ } -- the x-uplion-* headers a client may send
-- gRPC methods whose request is a stream (exact paths; uplion.edge.filters.STREAMING_REQUEST_METHODS)
local STREAMING_REQUESTS = { __STREAMING_REQUESTS__ }
local CLIENT_ADDRESS = "__CLIENT_ADDRESS_HEADER__"
local MAX_HEADER_BYTES = __MAX_HEADER_BYTES__ -- one header's name and value
local HEADERS_TOO_LARGE = '{"error":{"message":"__HEADERS_TOO_LARGE__","type":"invalid_request_error",' ..
  '"param":null,"code":"request_headers_too_large"}}'

-- Removes every x-uplion-* header a client may not send (collected first: the map must not change
-- while it is iterated). Returns true when a header is larger than MAX_HEADER_BYTES.
local function strip_and_measure(headers)
  local drop = nil
  local too_large = false
  for name, value in pairs(headers) do
    if string.len(name) + string.len(value) > MAX_HEADER_BYTES then
      too_large = true
    end
    if string.sub(name, 1, PREFIX_LEN) == PREFIX and not CLIENT_HEADERS[name] then
      drop = drop or {}
      drop[#drop + 1] = name
    end
  end
  if drop ~= nil then
    for _, name in ipairs(drop) do
      headers:remove(name)
    end
  end
  return too_large
end

-- The client's IP as Envoy determined it (use_remote_address and the trusted hops), without the port.
local function client_address(request_handle)
  local addr = request_handle:streamInfo():downstreamRemoteAddress() or ""
  return string.match(addr, "^%[(.+)%]:%d+$") or string.match(addr, "^([^:]+):%d+$") or addr
end

-- Tokens to reserve for a request (an upper bound, settled later): a token is at least ~4 bytes
-- of the body, plus the output it may generate (max_tokens or the Responses API's max_output_tokens,
-- or the default, times n).
local function token_estimate(bare, text)
  local estimate = math.ceil(string.len(text) / 4)
  if GENERATES[bare] then
    local max = string.match(text, '"max_completion_tokens"%s*:%s*(%d+)') or string.match(text, '"max_tokens"%s*:%s*(%d+)')
      or string.match(text, '"max_output_tokens"%s*:%s*(%d+)')
    local n = tonumber(string.match(text, '"n"%s*:%s*(%d+)') or "1")
    estimate = estimate + (tonumber(max) or DEFAULT_MAX_OUTPUT) * math.max(n, 1)
  end
  return estimate
end

function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  -- before anything reads them: only the edge and ext_authz say who a request is from, how many
  -- tokens it may use, where it comes from
  if strip_and_measure(headers) then
    if string.find(headers:get("content-type") or "", "^application/grpc") then
      -- native gRPC clients get a gRPC status (trailers-only), not an HTTP error
      request_handle:respond({ [":status"] = "200", ["content-type"] = "application/grpc", ["grpc-status"] = "3",
        ["grpc-message"] = "__HEADERS_TOO_LARGE__" }, "")
    else
      request_handle:respond({ [":status"] = "431", ["content-type"] = "application/json", ["x-should-retry"] = "false" },
        HEADERS_TOO_LARGE)
    end
    return
  end
  headers:replace(CLIENT_ADDRESS, client_address(request_handle))
  local path = headers:get(":path")
  if path ~= nil and headers:get(":method") ~= "POST"
      and (string.sub(path, 1, 8) == "/uplion." or string.sub(path, 1, 6) == "/grpc.") then
    -- every gRPC call is a POST: any other method is answered here (UNIMPLEMENTED) and never reaches
    -- a service, whose gRPC server would only drop it after logging a parse error
    request_handle:respond({ [":status"] = "200", ["content-type"] = "application/grpc", ["grpc-status"] = "12",
      ["grpc-message"] = "gRPC methods are called with POST" }, "")
    return
  end
  if path == nil or headers:get(":method") ~= "POST" or STREAMING_REQUESTS[path] then
    -- nothing to read; a streamed request (exact path: no unary RPC can be sent under one) would
    -- never end while its call waits for answers, so body() would hold it until its deadline. The
    -- filters after this one (ext_authz, the rate limiter) still run on its headers.
    headers:replace(ESTIMATE, "0")
    return
  end
  local bare = string.gsub(path, "%?.*$", "")
  local body = request_handle:body()
  local text = ""
  if body ~= nil then
    if body:length() > MAX_BODY_BYTES then
      -- refused here, before any limit counts it
      request_handle:respond({ [":status"] = "413", ["content-type"] = "application/json", ["x-should-retry"] = "false" },
        '{"error":{"message":"The request body is larger than ' .. MAX_BODY_BYTES .. ' bytes.",' ..
        '"type":"invalid_request_error","param":null,"code":"request_too_large"}}')
      return
    end
    text = body:getBytes(0, body:length())
  end
  -- headers() again: the handle taken before body() is stale once the body is buffered
  request_handle:headers():replace(ESTIMATE, tostring(token_estimate(bare, text)))
end

local function json_escape(s)
  s = string.gsub(s, '[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    if c == "\n" then return "\\n" end
    return string.format("\\u%04x", string.byte(c))
  end)
  return s
end

local KIND = {
  ["400"] = { "invalid_request_error", nil },
  ["401"] = { "invalid_request_error", "invalid_api_key" },
  ["403"] = { "invalid_request_error", "permission_denied" },
  ["404"] = { "invalid_request_error", "not_found" },
  ["413"] = { "invalid_request_error", "request_too_large" },
  ["429"] = { "rate_limit_error", "rate_limit_exceeded" },
  ["504"] = { "timeout", "timeout" },
}

function envoy_on_response(response_handle)
  -- read every header first: the headers handle goes stale once body() buffers the response
  local headers = response_handle:headers()
  local ctype = headers:get("content-type") or ""
  if string.find(ctype, "^application/grpc") then
    return -- native gRPC clients get gRPC, untouched
  end
  -- gRPC's own headers mean nothing to a REST client
  headers:remove("grpc-accept-encoding")
  headers:remove("grpc-encoding")
  local status = headers:get(":status")
  if status == nil or tonumber(status) < 400 then
    headers:remove("grpc-status")
    headers:remove("grpc-message")
    -- the gRPC status of an answer also arrives as trailers, which HTTP/2 clients would see: let the
    -- body stream through chunk by chunk (nothing is buffered) and drop them at its end
    for _ in response_handle:bodyChunks() do
    end
    local trailers = response_handle:trailers()
    if trailers ~= nil then
      trailers:remove("grpc-status")
      trailers:remove("grpc-message")
    end
    return
  end
  local own = headers:get("x-uplion-error")
  local grpc_message = headers:get("grpc-message")

  local body = response_handle:body()
  local out = own
  if out == nil then
    local text = ""
    if body ~= nil then
      text = body:getBytes(0, body:length())
    end
    if string.find(text, '^%s*{%s*"error"%s*:') then
      return -- already OpenAI's shape
    end
    local message = grpc_message or text
    if message == nil or message == "" then
      message = "HTTP " .. status
    end
    local kind = KIND[status] or { "api_error", nil }
    local code = "null"
    if kind[2] ~= nil then
      code = '"' .. kind[2] .. '"'
    end
    out = '{"error":{"message":"' .. json_escape(message) .. '","type":"' .. kind[1] ..
      '","param":null,"code":' .. code .. '}}'
  end
  if body ~= nil then
    body:setBytes(out)
  end
  local h = response_handle:headers()
  h:replace("content-type", "application/json")
  h:replace("content-length", tostring(string.len(out)))
  h:remove("x-uplion-error")
  h:remove("grpc-status")
  h:remove("grpc-message")
  if tonumber(status) < 500 and status ~= "429" then
    h:replace("x-should-retry", "false")
  end
end
