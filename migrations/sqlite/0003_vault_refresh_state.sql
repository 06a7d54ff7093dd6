-- What convsync knows about the use of each stored refresh token, so that a refresh whose
-- answer was lost is never mistaken for one that did not happen (src/http/auth.rs):
--   sent_at    a refresh with this token was sent and no answer has been recorded since;
--              the provider may have spent the token.
--   refused_at the token endpoint refused the token; it is never sent again.
--   refused_after_lost_answer  1 when that refusal followed a lost answer (the provider
--              most likely rotated the token and the new one never arrived).
-- `rotated_at` remains the instant the token was issued (or, for a configured token, first
-- seen): HighLevel's refresh tokens expire a year after issue unless used.
ALTER TABLE refresh_tokens ADD COLUMN sent_at TEXT;
ALTER TABLE refresh_tokens ADD COLUMN refused_at TEXT;
ALTER TABLE refresh_tokens ADD COLUMN refused_after_lost_answer INTEGER NOT NULL DEFAULT 0;
