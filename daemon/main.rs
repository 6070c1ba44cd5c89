fn main() {
    let p = iomon::probes::Probes::load(&Default::default()).unwrap();
    let mut d = iomon::drain::Drain::new(p.maps().unwrap(), iomon::family::ALL.iter().map(|f| f.id).filter(|f| p.attached(*f)).collect(), 10240, 20, Default::default()).unwrap();
    for _ in 0..4 { std::thread::sleep(std::time::Duration::from_secs(2)); let s = d.tick().unwrap(); println!("{:?} ratio {:?}", s.pagecache, s.pagecache.as_ref().unwrap().hit_ratio()); println!("seen {} {:?}", s.procs_seen, s.procs.iter().map(|p| (p.tgid, p.comm.clone(), p.pc_asked, p.pc_missed)).collect::<Vec<_>>()); }
}
