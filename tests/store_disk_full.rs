//! The history store on a full disk: a size-limited tmpfs filled to ENOSPC
//! while Samples keep coming. Needs root (mount); skips with a message
//! elsewhere, fails instead under IOMON_REQUIRE_BPF=1 (CI).

mod common;

use std::time::Duration;

use iomon::abi::{self, fadvise as fa};
use iomon::family::Section;
use iomon::sample::Sample;
use iomon::store::{Store, StoreOptions, Tier, HOUR_MS};

const T0: u64 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS;
const DONTNEED_OK: usize = fa::advice::DONTNEED * fa::result::N + fa::result::OK;

fn sample(i: u64) -> Sample {
    let mut c = vec![0; abi::FADVISE.ncounters];
    c[DONTNEED_OK] = 1;
    Sample {
        start_ms: T0 + i * 10_000,
        end_ms: T0 + (i + 1) * 10_000,
        sections: [(
            "fadvise".to_string(),
            Section {
                counters: c,
                hists: vec![],
            },
        )]
        .into(),
        ..Default::default()
    }
}

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount(&self.0);
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn bpf_store_survives_a_full_disk_and_resumes() {
    let Some(_k) = common::bpf_or_skip("bpf_store_survives_a_full_disk_and_resumes") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("iomon-full-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=4m"),
    )
    .expect("mount a 4 MiB tmpfs");
    let _fs = Tmpfs(dir.clone());
    let mut st = Store::open(&dir.join("history"), opts()).unwrap();
    for i in 0..10 {
        st.append(&sample(i));
    }
    st.flush(T0 + 100_000);
    assert_eq!(st.len(Tier::Raw), 10);
    assert_eq!(st.write_errors, 0);

    // Fill the filesystem.
    let filler = dir.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0x5au8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    // Keep appending and flushing: the flushes fail, are counted, and
    // the Samples wait in memory (and stay visible to queries).
    let mut i = 10;
    while st.write_errors == 0 && i < 5000 {
        st.append(&sample(i));
        st.flush(T0 + (i + 1) * 10_000);
        i += 1;
    }
    assert!(st.write_errors > 0, "the disk never filled");
    let failed_at = i;
    for _ in 0..20 {
        st.append(&sample(i));
        st.flush(T0 + (i + 1) * 10_000);
        i += 1;
    }
    let visible = st.range(T0, T0 + (i + 1) * 10_000, Some(10_000)).unwrap();
    assert_eq!(
        visible.points.len() as u64,
        i,
        "nothing lost while the disk is full"
    );

    // Space comes back: writing resumes by itself, everything is stored.
    std::fs::remove_file(&filler).unwrap();
    st.append(&sample(i));
    i += 1;
    st.flush(T0 + (i + 1) * 10_000);
    st.flush(T0 + (i + 1) * 10_000);
    assert_eq!(
        st.len(Tier::Raw) as u64,
        i,
        "written after space returned (failed from {failed_at})"
    );
    drop(st);
    // And what was stored before is intact on reopen.
    let st = Store::open(&dir.join("history"), opts()).unwrap();
    assert!(st.moved_aside.is_none(), "not damaged");
    assert_eq!(st.len(Tier::Raw) as u64, i);
    let total: u64 = st
        .range(T0, T0 + (i + 1) * 10_000, Some(10_000))
        .unwrap()
        .points
        .iter()
        .map(|p| p.section("fadvise").unwrap().get(DONTNEED_OK).unwrap())
        .sum();
    assert_eq!(total, i);
}

fn opts() -> StoreOptions {
    StoreOptions {
        retention_raw: Duration::from_secs(48 * 3600),
        retention_1m: Duration::from_secs(14 * 86400),
        retention_1h: Duration::from_secs(400 * 86400),
        max_bytes: 256 << 20,
        top_k: 10,
        raw_resolution_ms: 10_000,
    }
}
