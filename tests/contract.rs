//! Each port's contract, run against both backends: the embedded adapters
//! and the AWS adapters on a real moto server.

use e2e::contract::{self, Backend};
use e2e::moto;

macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                let (app, _dir) = contract::embedded_app();
                contract::$name(&app, Backend::Embedded).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn aws_on_moto() {
                let (app, _, _) = moto::app().await;
                contract::$name(&app, Backend::AwsOnMoto).await;
            }
        }
    };
}

both_backends!(user_store);
both_backends!(project_store);
both_backends!(project_deletion);
both_backends!(content_store);
both_backends!(content_writers);
both_backends!(job_store);
both_backends!(job_history);
both_backends!(blob_store);
both_backends!(queue);
both_backends!(bulk_imports);
