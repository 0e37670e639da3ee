-- uplion's OpenAI edge (Envoy Lua filter, placed before the gRPC-JSON transcoder).
--
-- Requests: the OpenAI SDKs send streamed and non-streamed chat/completions to the same path; a
-- JSON body with "stream": true is routed to the streaming RPC's binding (`<path>:stream`).
-- Responses: every error leaves in OpenAI's shape {"error": {message, type, param, code}}. The
-- gateway's own error object (trailing metadata x-uplion-error) is used as is; errors Envoy makes
-- itself (malformed JSON, unknown path, body too large, upstream down) are wrapped by status.

local STREAMABLE = { ["/v1/chat/completions"] = true, ["/v1/completions"] = true }

function envoy_on_request(request_handle)
  local path = request_handle:headers():get(":path")
  if path == nil or request_handle:headers():get(":method") ~= "POST" then
    return
  end
  local bare = string.gsub(path, "%?.*$", "")
  if not STREAMABLE[bare] then
    return
  end
  local body = request_handle:body()
  if body == nil then
    return
  end
  local text = body:getBytes(0, body:length())
  -- the top-level "stream" member; an escaped \"stream\" inside a string never matches
  if string.find(text, '"stream"%s*:%s*true') then
    -- headers() again: the handle taken before body() is stale once the body is buffered
    request_handle:headers():replace(":path", bare .. ":stream")
  end
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
  local status = headers:get(":status")
  if status == nil or tonumber(status) < 400 then
    headers:remove("grpc-status")
    headers:remove("grpc-message")
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
