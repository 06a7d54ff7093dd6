//! The deploy/ artifacts run for real: container image, Compose, systemd, alerts, notify.

mod alerts;
mod compose;
mod compose_replicas;
mod container;
mod docker_api;
mod docker_run;
mod files;
mod notify;
mod permissions;
mod systemd;
mod systemd_replicas;
