fn main() {
    let p = iomon::probes::Probes::load(&Default::default()).unwrap();
    for s in p.status() { println!("{:?} {:?}", s.family, s.state); for pr in s.programs { println!("   {} {} {:?}", pr.name, pr.attached, pr.reason); } }
    let mut d = iomon::drain::Drain::new(p.maps().unwrap(), iomon::family::ALL.iter().map(|f| f.id).filter(|f| p.attached(*f)).collect(), 10240, 20, Default::default()).unwrap();
    for _ in 0..3 { std::thread::sleep(std::time::Duration::from_secs(1)); let s = d.tick().unwrap(); println!("{:?}\n{:?}\n{:?} procs={}", s.fadvise, s.pagecache, s.reclaim, s.procs_seen); }
}
