//! Reading the source (MySQL/MariaDB).
//!
//! - [`schema`]: what a table looks like — columns, their type mapping, the keyset.
//! - [`mysql`]: connecting, introspection, and the keyset poller.
//!
//! The pipeline only sees the [`Source`] trait: a source hands out pages of rows in keyset
//! order and says when it has caught up. The watermark a row stands for is its keyset
//! (cursor columns, then primary key), so the position travels with the data. A binlog
//! source will plug in behind the same trait.

pub mod mysql;
pub mod schema;

use std::future::Future;

use crate::error::Result;
use crate::value::Row;

/// What one read returned.
#[derive(Debug, Default)]
pub struct Page {
    /// Rows in keyset order, all past the position the previous page ended at.
    pub rows: Vec<Row>,
    /// True when the source had no more rows to give at the moment of the read (or, in
    /// `--once` mode, when the end of the table as of start has been reached).
    pub caught_up: bool,
    /// True when the read stopped at a row an open transaction holds (it may still commit
    /// behind rows read later): nothing was returned, try again after the poll interval.
    pub held: bool,
}

/// A stream of source rows past a watermark.
pub trait Source: Send {
    /// Reads up to `limit` rows after the current position and moves the position to the
    /// last row returned.
    fn read(&mut self, limit: usize) -> impl Future<Output = Result<Page>> + Send;
}
