-- Stored Responses API answers (`store`, the default): their owner reads, deletes and continues
-- them (previous_response_id); nobody else sees them.
--
-- response: the uplion.v1.Response message (protobuf bytes); its JSON is written when it is read.
-- input_items: the request's own input items as OpenAI's JSON (a list), ids included.
CREATE TABLE responses (
    response_id text PRIMARY KEY,
    user_id text NOT NULL,
    previous_response_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    input_items text NOT NULL,
    response bytea NOT NULL
);
CREATE INDEX responses_user_created ON responses (user_id, created_at);
