//! The control socket's frame decoder and message decoding, fed arbitrary
//! bytes as a client could send them: must never panic, allocate without
//! bound, or accept trailing garbage.
#![no_main]

use iomon::proto::{decode, FrameBuffer, Request, Response, MAX_FRAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As a stream, in two pieces split where the first byte says.
    let split = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    let mut fb = FrameBuffer::default();
    for piece in [&data[..split], &data[split..]] {
        fb.extend(piece);
        loop {
            match fb.next_frame(MAX_FRAME) {
                Ok(Some(payload)) => {
                    let _ = decode::<Request>(&payload, MAX_FRAME);
                }
                Ok(None) | Err(_) => break,
            }
        }
        assert!(fb.len() <= data.len());
    }
    // As a payload directly, both directions.
    let _ = decode::<Request>(data, MAX_FRAME);
    let _ = decode::<Response>(data, MAX_FRAME);
    // A stored Sample, as read back from disk.
    let _ = iomon::store::decode_sample(data);
});
