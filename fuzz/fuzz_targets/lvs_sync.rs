//! IPVS sync messages on arbitrary bytes (what a backup reads off the multicast group):
//! an answer, never a panic; and what decodes encodes back to a datagram that decodes to
//! the same records.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = fulcrum_lvs_sync::decode(data) {
        let again: Vec<_> = fulcrum_lvs_sync::encode(m.syncid, &m.records, 65_000)
            .iter()
            .flat_map(|d| fulcrum_lvs_sync::decode(d).expect("our own datagram").records)
            .collect();
        assert_eq!(again, m.records);
    }
});
