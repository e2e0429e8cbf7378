-- Records migration $1 (named $2) as applied.
INSERT INTO iotstream_migrations (version, name) VALUES ($1, $2)
