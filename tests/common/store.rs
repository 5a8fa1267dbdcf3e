//! Test stores built over a real one.

/// `impl CertStore for $store` with the methods given, and the account
/// methods, `get_meta` and `delete_meta` handed unchanged to `self.inner`:
/// for a test store that changes how records (or `put_meta_if_absent`,
/// `set_meta`) behave and nothing else. Such a store offers no cluster
/// unless the methods given include `cluster`.
// Only some test crates build such a store.
#[allow(unused_macros)]
macro_rules! cert_store_over_inner {
    ($store:ident { $($methods:tt)* }) => {
        #[async_trait::async_trait]
        impl certkeeper::store::CertStore for $store {
            $($methods)*

            async fn load_account(
                &self,
                id: &str,
            ) -> certkeeper::Result<Option<certkeeper::store::AccountRecord>> {
                self.inner.load_account(id).await
            }

            async fn save_account(
                &self,
                record: &certkeeper::store::AccountRecord,
            ) -> certkeeper::Result<u64> {
                self.inner.save_account(record).await
            }

            async fn list_accounts(&self) -> certkeeper::Result<Vec<String>> {
                self.inner.list_accounts().await
            }

            async fn get_meta(&self, key: &str) -> certkeeper::Result<Option<String>> {
                self.inner.get_meta(key).await
            }

            async fn delete_account(&self, id: &str) -> certkeeper::Result<bool> {
                self.inner.delete_account(id).await
            }

            async fn delete_meta(&self, key: &str) -> certkeeper::Result<bool> {
                self.inner.delete_meta(key).await
            }
        }
    };
}

#[allow(unused_imports)]
pub(crate) use cert_store_over_inner;
