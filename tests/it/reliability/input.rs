//! Bad configuration through the real binary: every mistake is a clear error naming the
//! key, never a panic, and plain http to a non-loopback host is refused (TLS verification
//! cannot be turned off).

use crate::support::reliability::{Site, SiteOptions, sim_options};

/// `check-config` on `text` (written as the site's config) fails, naming `key` and saying
/// `fragment`, without a panic and without echoing any secret.
async fn assert_refused(site: &Site, text: &str, key: &str, fragment: &str) {
    std::fs::write(&site.config, text).unwrap();
    let done = site.run(&["check-config"]).await;
    let all = format!("{}{}", done.stdout, done.stderr);
    assert!(!done.status.success(), "accepted:\n{text}");
    assert!(!all.contains("panicked"), "{all}");
    assert!(all.contains(key), "should name {key:?}: {all}");
    assert!(all.contains(fragment), "should say {fragment:?}: {all}");
    for (_, value) in &site.secrets {
        assert!(!all.contains(value.as_str()), "a secret was echoed: {all}");
    }
}

/// Malformed TOML, wrong types, unknown keys, missing and unreadable secrets, out-of-range
/// values and plain http to a remote host: each is refused with the key named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_mistakes_are_named_never_panics() {
    let site = Site::start(sim_options(61, 5), SiteOptions::default()).await;
    let good = std::fs::read_to_string(&site.config).unwrap();
    assert!(site.run(&["check-config"]).await.status.success());
    let spruce_secret = site
        .dir
        .path()
        .join("secrets")
        .join("SIM_SPRUCE_API_TOKEN_0");

    let directory = site.dir.path().join("not-a-file");
    std::fs::create_dir_all(&directory).unwrap();
    let spruce_url = site.sim.spruce_base_url().to_string();
    // (configuration, the key the error names, what else it says)
    let mistakes = [
        (format!("{good}\n[[sources]\nname = "), "convsync.toml", ""),
        (
            good.replacen("poll_interval = \"10s\"", "poll_interval = 10", 1),
            "poll_interval",
            "",
        ),
        (
            good.replacen("[http]\n", "[http]\nretries_max = 3\n", 1),
            "http",
            "retries_max",
        ),
        (
            good.replacen(
                &format!("{{ file = \"{}\" }}", spruce_secret.display()),
                "{ env = \"CONVSYNC_TEST_UNSET_SECRET\" }",
                1,
            ),
            "api_token",
            "CONVSYNC_TEST_UNSET_SECRET",
        ),
        (
            good.replacen(
                &spruce_secret.display().to_string(),
                &directory.display().to_string(),
                1,
            ),
            "api_token",
            "not-a-file",
        ),
        (
            good.replacen(
                "[[sources]]\n",
                "[[sources]]\nmass_change_max_share = 7.5\n",
                1,
            ),
            "mass_change_max_share",
            "between",
        ),
        (
            good.replacen("page_size = 20", "page_size = 0", 1),
            "page_size",
            "",
        ),
        (
            good.replacen(
                &format!("base_url = \"{spruce_url}\""),
                "base_url = \"http://api.sprucehealth.com\"",
                1,
            ),
            "spruce.base_url",
            "https",
        ),
    ];
    for (text, key, fragment) in &mistakes {
        assert_refused(&site, text, key, fragment).await;
    }
}
