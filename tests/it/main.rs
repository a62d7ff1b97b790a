//! The integration tests: one binary (one link of the AWS SDK and kube instead of one per
//! file), one module per area, all against the real test bed that `tests/run` starts:
//! kube-apiserver + etcd, and moto behind the strict IAM layer. Tests share one moto
//! account and one apiserver and stay out of each other's way (a namespace, an IAM path
//! or an account of their own), so they run in parallel.
//!
//! `tests/apiserver_restart.rs` is a binary of its own: it restarts the shared apiserver,
//! which would break the requests of tests running beside it.

#[path = "../common/mod.rs"]
mod common;

mod admission;
mod api;
mod audit;
mod bad_input;
mod browser;
mod controller;
mod delivery;
mod faults;
mod gitops;
mod iam;
mod iam_faults;
mod iam_policy;
mod kubectl_plugin;
mod links;
mod multi_account;
mod operations;
mod rbac;
mod self_service;
mod strict_iam;
mod tenancy;
mod trust_boundary;
