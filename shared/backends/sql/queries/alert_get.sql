-- One alert as stored (JSON), by id ($1).
SELECT body FROM alerts WHERE id = $1
