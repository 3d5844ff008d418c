ALTER TABLE identity_versions ADD COLUMN key_ref TEXT NOT NULL DEFAULT '';
