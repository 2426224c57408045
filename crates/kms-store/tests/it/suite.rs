//! openraft's storage conformance suite against a fresh store per case.

use kms_store::LogStore;
use kms_store::StateMachineStore;
use kms_store::Store;
use kms_store::TypeConfig;
use kms_store::openraft::ErrorSubject;
use kms_store::openraft::ErrorVerb;
use kms_store::openraft::testing::log::StoreBuilder;
use kms_store::openraft::testing::log::Suite;
use kms_store::types::StorageError;
use tempfile::TempDir;

struct FreshStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for FreshStore {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let io = |e: std::io::Error| {
            StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Read, e)
        };
        let dir = tempfile::tempdir().map_err(io)?;
        let store = Store::open(dir.path()).map_err(|e| io(e.into()))?;
        Ok((dir, store.log_store(), store.state_machine()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() -> Result<(), StorageError> {
    Suite::test_all(FreshStore).await
}
