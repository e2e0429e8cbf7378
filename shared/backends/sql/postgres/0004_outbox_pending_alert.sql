-- The pending deliveries of an alert, found by the alert id inside the event body: notify
-- checks them before it sends a fresh event, and a new pending event is due no earlier than
-- them (queries/outbox_record.sql, queries/outbox_screen.sql use the same expression).
CREATE INDEX IF NOT EXISTS outbox_pending_alert ON outbox (((body::jsonb) -> 'alert' ->> 'id'))
    WHERE status = 'pending';
