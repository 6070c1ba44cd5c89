//! `iomonctl banyandb` end to end: iomond under the packaged unit's
//! capabilities (a non-root user with CAP_BPF, CAP_PERFMON and
//! CAP_DAC_READ_SEARCH only) finds a `banyand`'s roots from its command
//! line, names its files in a tree only root may read, and answers.

use super::common::banyand::Banyand;
use super::common::daemon::{free_port, http_get, Daemon};
use super::common::*;

const SEG: &str = "seg-20261201";

fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn bpf_banyandb_answers_for_a_banyand_found_by_its_command_line() {
    let Some(_k) = bpf_or_skip("bpf_banyandb_answers_for_a_banyand_found_by_its_command_line")
    else {
        return;
    };
    // Mounted as at boot: this iomond runs without CAP_SYS_ADMIN.
    _k.mount_tracefs();
    let dir = disk_dir("e2e-banyandb");
    let root = dir.join("root");
    let part = root.join(format!("measure/data/g1/{SEG}/shard-0/00000000000000a0"));
    std::fs::create_dir_all(&part).unwrap();
    let ps = page_size();
    for (name, pages) in [
        ("meta.bin", 2),
        ("primary.bin", 8),
        ("timestamps.bin", 16),
        ("fv.bin", 32),
    ] {
        make_file(&part.join(name), pages * ps);
    }
    let sidx = root.join(format!("measure/data/g1/{SEG}/sidx"));
    std::fs::create_dir_all(&sidx).unwrap();
    make_file(&sidx.join("000000000001.seg"), 32 * ps);
    // A snapshot: hard links of the live files.
    let snap = root.join(format!(
        "measure/snapshots/20261201000000/g1/{SEG}/shard-0/00000000000000a0"
    ));
    std::fs::create_dir_all(&snap).unwrap();
    for name in ["primary.bin", "fv.bin"] {
        std::fs::hard_link(part.join(name), snap.join(name)).unwrap();
    }
    for p in ["meta.bin", "primary.bin", "timestamps.bin", "fv.bin"] {
        evict(&std::fs::File::open(part.join(p)).unwrap());
    }
    evict(&std::fs::File::open(sidx.join("000000000001.seg")).unwrap());
    // Only root may read the tree: naming it takes CAP_DAC_READ_SEARCH.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let caps = "-all,+bpf,+perfmon,+dac_read_search";
    let d = Daemon::start_wrapped(
        "banyandb",
        &["--metrics-listen", &listen],
        Some("[targets]\nbanyand = { comm = \"banyand\" }\n"),
        &[],
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &format!("--inh-caps={caps}"),
            &format!("--ambient-caps={caps}"),
            &format!("--bounding-set={caps}"),
        ],
        Some(65534),
    );
    let r = root.to_str().unwrap().to_string();
    let mut b = Banyand::start(&["--measure-root-path", &r], None);
    d.wait_ticks(1);
    for name in ["meta.bin", "primary.bin", "timestamps.bin", "fv.bin"] {
        b.run(&format!("read {}", part.join(name).display()));
    }
    b.run(&format!(
        "fault {}",
        sidx.join("000000000001.seg").display()
    ));
    let fv = part.join("fv.bin");
    let dropped = b.run(&format!("drop {}", fv.display()));
    assert_eq!(dropped[&fv].dropped, 32);
    let back = b.run(&format!("readback {} 4", fv.display()));
    assert_eq!(back[&fv].missed, 4);
    d.wait_ticks(2);

    let j = d.json(&["banyandb", "--since", "5m"]);
    let naming = &j["naming"];
    assert_eq!(naming["processes"], 1, "{naming}");
    let data = format!("{r}/measure/data");
    assert!(
        naming["data_dirs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == &serde_json::json!(data)),
        "{naming}"
    );
    let row = |class: &str| {
        j["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["engine"] == "measure" && x["group"] == "g1" && x["class"] == class)
            .cloned()
            .unwrap_or_else(|| panic!("no measure/g1 {class} row: {j}"))
    };
    let (index, data_row) = (row("index"), row("data"));
    // Reads exact: 10 index pages cold; 48 data pages cold, then 4 of the
    // 32 DONTNEED dropped read back.
    assert_eq!(
        (index["asked"].as_u64(), index["missed"].as_u64()),
        (Some(10), Some(10)),
        "{index}"
    );
    assert_eq!(
        (data_row["asked"].as_u64(), data_row["missed"].as_u64()),
        (Some(52), Some(52)),
        "{data_row}"
    );
    assert_eq!(data_row["dontneed_dropped"], 32, "{data_row}");
    assert_eq!(data_row["refault_fadvise"], 4, "{data_row}");
    assert_eq!(index["map_asked"], 32, "the mapped index: {index}");
    let g = j["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["engine"] == "measure" && x["group"] == "g1")
        .unwrap();
    assert_eq!(g["index_read_hit"], 0.0, "{g}");
    assert_eq!(g["dontneed_refaulted"], 4);
    // The files: named by their live paths, not the snapshot's links.
    let top = j["top_refaults"].as_array().unwrap();
    assert_eq!(top[0]["path"].as_str(), fv.to_str(), "{top:?}");
    assert_eq!(top[0]["banyandb"]["kind"], "field_values");
    let misses = j["top_misses"].as_array().unwrap();
    let primary = misses
        .iter()
        .find(|f| f["banyandb"]["kind"] == "primary")
        .unwrap_or_else(|| panic!("{misses:?}"));
    assert_eq!(primary["path"].as_str(), part.join("primary.bin").to_str());
    let words = j["answer"].as_array().unwrap();
    assert!(
        words
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("index hit ratio 0.0 %")),
        "{words:?}"
    );
    assert!(
        words
            .iter()
            .any(|w| w.as_str().unwrap().starts_with(
                "12.5 % of what DONTNEED dropped (32 pages) was read back within 5 min"
            )),
        "{words:?}"
    );
    let table = d.ctl_ok(&["banyandb"]);
    assert!(
        table.contains("is the page cache working for BanyanDB?"),
        "{table}"
    );
    assert!(table.contains("measure  g1"), "{table}");
    let csv = d.ctl_ok(&["banyandb", "-o", "csv"]);
    assert!(
        csv.starts_with("target,engine,group,class,files,asked,missed,"),
        "{csv}"
    );
    // Prometheus: the same numbers, labelled.
    let (code, _, body) = http_get(&listen, "/metrics", &[]);
    assert_eq!(code, 200);
    let l = "target=\"banyand\",engine=\"measure\",group=\"g1\"";
    assert_eq!(
        metric(
            &body,
            &format!("iomon_banyandb_read_pages_total{{{l},kind=\"index\",result=\"miss\"}}")
        ),
        Some(10.0),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            &format!("iomon_banyandb_refault_pages_total{{{l},kind=\"data\",cause=\"fadvise\"}}")
        ),
        Some(4.0)
    );
    // status says how naming goes.
    let st = d.json(&["status"]);
    assert_eq!(st["banyandb"]["naming"]["processes"], 1);
    drop(b);
    // A stopped daemon's store answers the same question.
    let dir_of = d.dir.clone();
    let (_, _) = d.stop_keep();
    let out = std::process::Command::new(super::common::daemon::IOMONCTL)
        .args(["banyandb", "--since", "1h", "-o", "json", "--store"])
        .arg(dir_of.join("history"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let measure = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["engine"] == "measure")
            .cloned()
            .collect()
    };
    assert_eq!(
        measure(&offline),
        measure(&j),
        "the store holds what the daemon said"
    );
    let _ = std::fs::remove_dir_all(&dir_of);
}
