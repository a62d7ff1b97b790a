//! Sets up IAM state in moto the way an account would look, through the plain SDK (not
//! the product's adapter), and computes TOTP codes exactly as a phone app would, with a
//! TOTP implementation independent of the product's (the `totp-rs` crate).

use aws_sdk_iam::Client;
use aws_sdk_iam::error::DisplayErrorContext;
use aws_sdk_iam::types::{AssignmentStatusType, Tag};

/// A raw IAM client from the standard AWS configuration (the test bed points it at moto).
pub async fn client() -> Client {
    super::require_testbed();
    Client::new(&mfa_operator::aws::load_sdk_config(None).await)
}

pub async fn create_user(iam: &Client, name: &str, path: &str) {
    iam.create_user()
        .user_name(name)
        .path(path)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create user {name}: {}", DisplayErrorContext(e)));
}

pub async fn tag_user(iam: &Client, name: &str, key: &str, value: &str) {
    iam.tag_user()
        .user_name(name)
        .tags(Tag::builder().key(key).value(value).build().expect("tag"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("tag user {name}: {}", DisplayErrorContext(e)));
}

pub async fn add_to_group(iam: &Client, user: &str, group: &str) {
    let _ = iam.create_group().group_name(group).send().await;
    iam.add_user_to_group()
        .user_name(user)
        .group_name(group)
        .send()
        .await
        .unwrap_or_else(|e| panic!("add {user} to {group}: {}", DisplayErrorContext(e)));
}

pub async fn give_console_password(iam: &Client, user: &str) {
    iam.create_login_profile()
        .user_name(user)
        .password("Corr3ct-Horse-Battery!")
        .send()
        .await
        .unwrap_or_else(|e| panic!("login profile for {user}: {}", DisplayErrorContext(e)));
}

/// Gives `user` an enabled virtual device outside any operator path, as a person who set
/// up MFA in the console would have. Returns its serial.
pub async fn enable_own_device(iam: &Client, user: &str) -> String {
    let created = iam
        .create_virtual_mfa_device()
        .virtual_mfa_device_name(format!("own-{user}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("create device for {user}: {}", DisplayErrorContext(e)));
    let device = created.virtual_mfa_device.expect("device in response");
    let seed = String::from_utf8(device.base32_string_seed.expect("seed").into_inner()).expect("base32 text");
    let (code1, code2) = codes_now(&seed);
    iam.enable_mfa_device()
        .user_name(user)
        .serial_number(&device.serial_number)
        .authentication_code1(code1)
        .authentication_code2(code2)
        .send()
        .await
        .unwrap_or_else(|e| panic!("enable device for {user}: {}", DisplayErrorContext(e)));
    device.serial_number
}

/// Creates an unassigned device under `path` that no seed Secret claims (an orphan, as
/// a crash between creating a device and storing its seed leaves).
pub async fn create_orphan_device(iam: &Client, path: &str, name: &str) -> String {
    create_device_with_seed(iam, path, name).await.0
}

/// Every virtual device's serial and assigned user.
pub async fn virtual_devices(iam: &Client) -> Vec<(String, Option<String>)> {
    let devices = iam
        .list_virtual_mfa_devices()
        .assignment_status(AssignmentStatusType::Any)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap_or_else(|e| panic!("list virtual devices: {}", DisplayErrorContext(e)));
    devices.into_iter().map(|d| (d.serial_number, d.user.map(|u| u.user_name))).collect()
}

/// Virtual devices whose serial lies under `path`.
pub async fn devices_under(iam: &Client, path: &str) -> Vec<(String, Option<String>)> {
    let marker = format!(":mfa{path}");
    virtual_devices(iam).await.into_iter().filter(|(serial, _)| serial.contains(&marker)).collect()
}

fn totp(seed_base32: &str) -> totp_rs::Totp {
    let secret = totp_rs::Secret::try_from_base32(seed_base32.trim()).expect("seed is base32");
    totp_rs::Builder::new().with_secret(secret).build().expect("totp")
}

/// Two consecutive codes as a person reads them off a phone: the previous window's and
/// the current window's.
pub fn codes_now(seed_base32: &str) -> (String, String) {
    codes_at(seed_base32, now_secs())
}

/// The two consecutive codes whose second one is current at `unix_secs`.
pub fn codes_at(seed_base32: &str, unix_secs: u64) -> (String, String) {
    let totp = totp(seed_base32);
    (totp.generate(unix_secs - 30).to_string(), totp.generate(unix_secs).to_string())
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_secs()
}

/// Creates a virtual device under `path` as anyone with the common self-service policy
/// could, and returns its serial and the seed its creator now holds.
pub async fn create_device_with_seed(iam: &Client, path: &str, name: &str) -> (String, String) {
    let created = iam
        .create_virtual_mfa_device()
        .path(path)
        .virtual_mfa_device_name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create device {name}: {}", DisplayErrorContext(e)));
    let device = created.virtual_mfa_device.expect("device in response");
    let seed = String::from_utf8(device.base32_string_seed.expect("seed").into_inner()).expect("base32 text");
    (device.serial_number, seed)
}
