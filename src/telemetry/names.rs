//! Metric names: `sluice_<thing>_<unit>`, `_total` for counters, all in one place.

pub const ROWS_READ: &str = "sluice_rows_read_total";
pub const ROWS_WRITTEN: &str = "sluice_rows_written_total";
pub const BATCHES: &str = "sluice_batches_total";
pub const MERGED_BATCHES: &str = "sluice_merged_batches_total";
pub const RETRIES: &str = "sluice_retries_total";
pub const BAD_ROWS: &str = "sluice_bad_rows_total";
pub const FAILURES: &str = "sluice_table_failures_total";
pub const BATCH_ROWS: &str = "sluice_batch_rows";
pub const WRITE_SECONDS: &str = "sluice_write_duration_seconds";
pub const CHANNEL_ROWS: &str = "sluice_channel_rows";
pub const CHANNEL_BATCHES: &str = "sluice_channel_batches";
pub const WATERMARK_AGE: &str = "sluice_watermark_age_seconds";
pub const LAG: &str = "sluice_replication_lag_seconds";
pub const TABLE_RUNNING: &str = "sluice_table_running";
pub const CHANGES: &str = "sluice_changes_total";
pub const TRANSACTIONS: &str = "sluice_source_transactions_total";
pub const EVENTS_SKIPPED: &str = "sluice_binlog_events_skipped_total";
pub const BYTES_BEHIND: &str = "sluice_binlog_bytes_behind";
pub const DDL_LOCK_WAITS: &str = "sluice_ddl_lock_waits_total";
pub const ROWS_FUTURE: &str = "sluice_rows_future_cursor";
pub const MEMBER_TABLES: &str = "sluice_member_tables";
pub const VERIFY_CHECKS: &str = "sluice_verify_checks_total";
pub const VERIFY_ROWS_COMPARED: &str = "sluice_verify_rows_compared_total";
pub const VERIFY_ROWS_REPAIRED: &str = "sluice_verify_rows_repaired_total";
pub const VERIFY_ROWS_DIFFERING: &str = "sluice_verify_rows_differing";
pub const VERIFY_LAST_CHECK: &str = "sluice_verify_last_check_timestamp_seconds";
