//! The C/Rust ABI checked from one source: clang writes the layout of every struct the
//! program uses into the object's BTF (.BTF section); this reads it and holds each struct
//! of [`crate::abi`] to it, size and every field's offset, and holds `Reason`,
//! `SCHEDULERS` and the state numbers to the C enums. A field added on one side only, or
//! moved, fails here instead of corrupting a map. Test-only.

use std::collections::HashMap;

/// A struct as BTF describes it: its size and its members' byte offsets by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub size: usize,
    pub fields: HashMap<String, usize>,
}

/// The named structs of the BTF in an ELF object.
pub(crate) fn structs(elf: &[u8]) -> Result<HashMap<String, Layout>, String> {
    parse(section(elf, ".BTF")?)
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| format!("truncated at {at}"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| format!("truncated at {at}"))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, String> {
    Ok(u64::from(u32_at(b, at)?) | u64::from(u32_at(b, at + 4)?) << 32)
}

/// A section of a little-endian ELF64 file, by name.
fn section<'a>(elf: &'a [u8], wanted: &str) -> Result<&'a [u8], String> {
    if elf.get(0..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a little-endian ELF64 object".into());
    }
    let shoff = u64_at(elf, 0x28)? as usize;
    let shentsize = usize::from(u16_at(elf, 0x3a)?);
    let shnum = usize::from(u16_at(elf, 0x3c)?);
    let shstrndx = usize::from(u16_at(elf, 0x3e)?);
    let header = |i: usize| -> Result<(u32, usize, usize), String> {
        let h = shoff + i * shentsize;
        Ok((
            u32_at(elf, h)?,
            u64_at(elf, h + 0x18)? as usize,
            u64_at(elf, h + 0x20)? as usize,
        ))
    };
    let (_, names_at, names_len) = header(shstrndx)?;
    let names = elf
        .get(names_at..names_at + names_len)
        .ok_or("section names out of the file")?;
    for i in 0..shnum {
        let (name, at, len) = header(i)?;
        let name = cstr(names, name as usize)?;
        if name == wanted {
            return elf
                .get(at..at + len)
                .ok_or_else(|| format!("{wanted} out of the file"));
        }
    }
    Err(format!("no {wanted} section"))
}

fn cstr(b: &[u8], at: usize) -> Result<&str, String> {
    let rest = b.get(at..).ok_or("string out of its table")?;
    let end = rest
        .iter()
        .position(|&c| c == 0)
        .ok_or("unterminated string")?;
    std::str::from_utf8(&rest[..end]).map_err(|e| e.to_string())
}

/// BTF (the kernel's Documentation/bpf/btf.rst): a header, then the types, each a 12-byte
/// `struct btf_type` and the data of its kind, then the strings.
fn parse(btf: &[u8]) -> Result<HashMap<String, Layout>, String> {
    if u16_at(btf, 0)? != 0xeb9f {
        return Err("not BTF (magic)".into());
    }
    let hdr_len = u32_at(btf, 4)? as usize;
    let (type_off, type_len) = (u32_at(btf, 8)? as usize, u32_at(btf, 12)? as usize);
    let str_off = u32_at(btf, 16)? as usize;
    let types = btf
        .get(hdr_len + type_off..hdr_len + type_off + type_len)
        .ok_or("types out of the section")?;
    let strings = btf
        .get(hdr_len + str_off..)
        .ok_or("strings out of the section")?;
    let mut out = HashMap::new();
    let mut at = 0;
    while at < types.len() {
        let name = u32_at(types, at)? as usize;
        let info = u32_at(types, at + 4)?;
        let size = u32_at(types, at + 8)? as usize;
        let (kind, vlen, kflag) = ((info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31);
        at += 12;
        let extra = match kind {
            1 | 14 | 17 => 4,             // int, var, decl tag
            3 => 12,                      // array
            4 | 5 | 15 | 19 => vlen * 12, // struct, union, datasec, enum64
            6 | 13 => vlen * 8,           // enum, func proto
            2 | 7..=12 | 16 | 18 => 0,    // ptr, fwd, typedef, modifiers, func, float, tag
            other => return Err(format!("unknown BTF kind {other}")),
        };
        if kind == 4 && name != 0 {
            let mut fields = HashMap::new();
            for m in 0..vlen {
                let field = at + m * 12;
                let offset = u32_at(types, field + 8)?;
                // With kflag the low 24 bits are the bit offset (the rest a bitfield size).
                let bits = if kflag == 1 {
                    offset & 0xff_ffff
                } else {
                    offset
                };
                let name = cstr(strings, u32_at(types, field)? as usize)?;
                fields.insert(name.to_string(), (bits / 8) as usize);
            }
            out.insert(cstr(strings, name)?.to_string(), Layout { size, fields });
        }
        at += extra;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;
    use crate::abi::*;

    /// (C name, Rust size, Rust fields and their offsets).
    macro_rules! layout {
        ($t:ty, $c:literal, [$($f:ident),+ $(,)?]) => {
            (
                $c,
                size_of::<$t>(),
                vec![$((stringify!($f), offset_of!($t, $f))),+],
            )
        };
    }

    #[test]
    fn every_shared_struct_matches_the_programs_btf() {
        let btf = structs(crate::PROGRAM).expect("the program's BTF");
        let ours = [
            layout!(ServiceKey, "service_key", [addr, port, proto, family]),
            layout!(
                ServiceValue,
                "service_value",
                [
                    id,
                    sched,
                    flags,
                    ndests,
                    persist_timeout,
                    persist_mask,
                    wrr_mw,
                    wrr_di,
                    table_size,
                    pad
                ]
            ),
            layout!(
                Dest,
                "dest",
                [
                    addr,
                    port,
                    method,
                    flags,
                    weight,
                    ifindex,
                    mac,
                    smac,
                    u_threshold,
                    l_threshold,
                    tun_saddr,
                    tun_port,
                    tun_type,
                    tun_flags
                ]
            ),
            layout!(DestConns, "dest_conns", [active, inactive]),
            layout!(
                Traffic,
                "traffic",
                [conns, inpkts, outpkts, inbytes, outbytes]
            ),
            layout!(SchedState, "sched_state", [rr, wrr, rng, pad]),
            layout!(FlowKey, "flow_key", [src, dst, sport, dport, proto, pad]),
            layout!(
                Conn,
                "conn",
                [
                    expires, client, vip, rip, cport, vport, rport, proto, state, svc, dest,
                    method, flags, timeout, ifindex, dmac, smac, route_gen, mtu, in_pkts, counted
                ]
            ),
            layout!(ConnSlot, "conn_slot", [tag, w0, w1, reach, pad, c]),
            layout!(
                ConnHash,
                "conn_hash",
                [mul0, mul1, stashed, live, slots, limit, mul2]
            ),
            layout!(FlowKey6, "flow_key6", [src, dst, sport, dport, proto, pad]),
            layout!(Conn6, "conn6", [c, client, vip, rip]),
            layout!(ConnSlot6, "conn_slot6", [tag, w0, w1, reach, pad, c]),
            layout!(ConnHash6, "conn_hash6", [h, amul]),
            layout!(PersistKey, "persist_key", [svc, client]),
            layout!(PersistKey6, "persist_key6", [svc, pad, client]),
            layout!(PersistValue, "persist_value", [expires, dest, rip]),
            layout!(TableKey, "table_key", [svc, slot]),
            layout!(LocalityKey, "locality_key", [svc, addr]),
            layout!(
                LocalityValue,
                "locality_value",
                [used, changed, set, dest, pad]
            ),
            layout!(Clock, "clock", [tick_ns, base]),
            layout!(HostMacs, "host_macs", [ifindex, n, mac]),
        ];
        for (name, size, fields) in ours {
            let c = btf
                .get(name)
                .unwrap_or_else(|| panic!("struct {name} is not in the program's BTF"));
            assert_eq!(size, c.size, "sizeof(struct {name})");
            let rust: HashMap<String, usize> =
                fields.iter().map(|(f, o)| (f.to_string(), *o)).collect();
            assert_eq!(
                rust, c.fields,
                "the fields of struct {name} and their offsets"
            );
        }
    }

    /// The enumerators of `enum NAME` in a C header, with their values (the header gives
    /// every value explicitly; BTF holds only the enums a map or argument uses).
    fn c_enum(header: &str, name: &str) -> HashMap<String, i64> {
        let start = header
            .find(&format!("enum {name} {{"))
            .unwrap_or_else(|| panic!("enum {name} in the header"));
        let body = &header[start..];
        let body = &body[body.find('{').unwrap() + 1..body.find("};").unwrap()];
        body.lines()
            .filter_map(|l| {
                let l = l.split("/*").next()?.trim().trim_end_matches(',');
                let (k, v) = l.split_once('=')?;
                Some((k.trim().to_string(), v.trim().parse().ok()?))
            })
            .collect()
    }

    /// `Reason` and `SCHEDULERS` index the program's counters and its scheduler field:
    /// they are numbered as the C enums are, name for name.
    #[test]
    fn reasons_and_schedulers_are_numbered_as_the_program_numbers_them() {
        let header = include_str!("../bpf/include/constants.h");
        let stat = c_enum(header, "stat_reason");
        for r in crate::Reason::ALL {
            let c = format!("STAT_{}", r.name().to_uppercase());
            assert_eq!(stat.get(&c), Some(&i64::from(r as u32)), "{c}");
        }
        assert_eq!(
            stat.get("STAT_MAX"),
            Some(&(crate::Reason::ALL.len() as i64)),
            "every reason is mirrored"
        );
        let sched = c_enum(header, "sched_kind");
        for (i, s) in crate::SCHEDULERS.iter().enumerate() {
            let c = format!("SCHED_{}", s.name().to_uppercase());
            assert_eq!(sched.get(&c), Some(&(i as i64)), "{c}");
        }
        assert_eq!(sched.len(), crate::SCHEDULERS.len());
        let states = c_enum(header, "conn_state");
        assert_eq!(states.get("STATE_MAX"), Some(&(STATE_NAMES.len() as i64)));
        assert_eq!(
            states.get("TCP_S_ESTABLISHED"),
            Some(&(STATE_ESTABLISHED as i64))
        );
        assert_eq!(states.get("TCP_S_FIN_WAIT"), Some(&(STATE_FIN_WAIT as i64)));
        assert_eq!(states.get("STATE_UDP"), Some(&(STATE_UDP as i64)));
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        assert!(structs(b"not an elf").is_err());
        assert!(parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0]).is_err());
    }
}
