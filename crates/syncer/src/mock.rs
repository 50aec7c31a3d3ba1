//! `MockSyncer` (feature `mock`): a mockall mock of [`Syncer`] for the unit tests of
//! callers. Written out with `mock!` because `automock` cannot take the `&mut dyn FnMut`
//! progress callback; it sits beside the trait so that the two change together.

use std::path::Path;

use crate::{Progress, SyncError, SyncOptions, SyncReport, Syncer};

mockall::mock! {
    /// A mockall mock of [`Syncer`].
    pub Syncer {}
    impl Syncer for Syncer {
        fn mirror(&self, source: &Path, target: &Path, opts: &SyncOptions, progress: &mut dyn FnMut(Progress)) -> Result<SyncReport, SyncError>;
        fn describe(&self) -> String;
    }
}
