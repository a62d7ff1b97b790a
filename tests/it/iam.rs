//! The IAM adapter, built only from the standard AWS configuration chain, against the
//! test bed's moto server.

use crate::common;

use mfa_operator::aws::{IamApi, IamError, SdkIam, load_sdk_config};

#[tokio::test]
async fn standard_configuration_lists_users_created_in_moto() {
    common::require_testbed();
    let config = load_sdk_config(None).await;
    let raw = aws_sdk_iam::Client::new(&config);
    let names: Vec<String> = (0..3).map(|i| common::unique(&format!("list{i}"))).collect();
    for name in &names {
        raw.create_user()
            .user_name(name)
            .path("/engineering/")
            .send()
            .await
            .unwrap_or_else(|e| panic!("create user {name} in moto: {}", aws_sdk_iam::error::DisplayErrorContext(e)));
    }

    let users = SdkIam::new(&config).list_users().await.expect("list users");

    for name in &names {
        let user = users.iter().find(|u| &u.name == name).unwrap_or_else(|| panic!("{name} not listed"));
        assert_eq!(user.path, "/engineering/");
        assert!(user.arn.ends_with(&format!(":user/engineering/{name}")), "{}", user.arn);
    }
}

#[tokio::test]
async fn unreachable_endpoint_is_a_transport_error_not_a_panic() {
    common::require_testbed();
    // Same standard chain, with the IAM endpoint moved to a closed port.
    let config = load_sdk_config(None).await;
    let client = aws_sdk_iam::Client::from_conf(
        aws_sdk_iam::config::Builder::from(&config)
            .endpoint_url("http://127.0.0.1:9")
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build(),
    );
    let err = SdkIam::from_client(client).list_users().await.expect_err("nothing listens on port 9");
    assert!(matches!(err, IamError::Transport { operation: "GetAccountAuthorizationDetails", .. }), "{err:?}");
}
