-- Shared by the user-acting wrk scripts here (loaded with dofile): user tokens for a server in AUTH_MODE=jwt.
-- TOKENS names a file of one token a line, line i for user FIRST_USER + i, as
-- `AUTH_JWT_SECRET=... stampede token --user "$FIRST_USER" --count "$USERS" > tokens.txt` prints them.
-- Without TOKENS (unset or empty) no Authorization header is sent (a server in AUTH_MODE=none).

-- The file's tokens as `Authorization` values; empty without TOKENS.
function load_tokens()
    local tokens = {}
    local file = os.getenv("TOKENS")
    if file and file ~= "" then
        for line in io.lines(file) do
            tokens[#tokens + 1] = "Bearer " .. line
        end
    end
    return tokens
end

-- How many users a script may cycle through: with tokens, only those that have one.
function users_with_tokens(tokens, users)
    if #tokens > 0 then
        return math.min(users, #tokens)
    end
    return users
end

-- JSON headers of a request acting for the user `offset` ids after FIRST_USER.
function user_headers(tokens, offset)
    local headers = { ["Content-Type"] = "application/json" }
    if #tokens > 0 then
        headers["Authorization"] = tokens[offset + 1]
    end
    return headers
end
