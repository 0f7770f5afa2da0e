//! Hand-built binary plists for tests and fuzz seeds: the expansion shapes an attacker sends, which no plist
//! writer produces (writers reference an object a few times, not hundreds of thousands).

/// A binary plist of `objects` (each already encoded), the last one the root; 4-byte offsets and refs.
pub(crate) fn bplist(objects: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"bplist00".to_vec();
    let mut offsets = Vec::new();
    for o in objects {
        offsets.push(u32::try_from(out.len()).unwrap());
        out.extend_from_slice(o);
    }
    let table = out.len() as u64;
    for o in offsets {
        out.extend_from_slice(&o.to_be_bytes());
    }
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&[4, 4]);
    out.extend_from_slice(&(objects.len() as u64).to_be_bytes());
    out.extend_from_slice(&(objects.len() as u64 - 1).to_be_bytes());
    out.extend_from_slice(&table.to_be_bytes());
    out
}

/// An object marker with its length: inline below 15, else followed by a 4-byte integer object.
fn marker(kind: u8, len: usize) -> Vec<u8> {
    if len < 15 {
        vec![kind | len as u8]
    } else {
        let mut o = vec![kind | 0x0F, 0x12];
        o.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
        o
    }
}

pub(crate) fn ascii(s: &[u8]) -> Vec<u8> {
    [marker(0x50, s.len()), s.to_vec()].concat()
}

pub(crate) fn data(b: &[u8]) -> Vec<u8> {
    [marker(0x40, b.len()), b.to_vec()].concat()
}

pub(crate) fn array(refs: &[u32]) -> Vec<u8> {
    let mut o = marker(0xA0, refs.len());
    for r in refs {
        o.extend_from_slice(&r.to_be_bytes());
    }
    o
}

/// A dictionary of (key ref, value ref) pairs.
pub(crate) fn dict(pairs: &[(u32, u32)]) -> Vec<u8> {
    let mut o = marker(0xD0, pairs.len());
    for (k, _) in pairs {
        o.extend_from_slice(&k.to_be_bytes());
    }
    for (_, v) in pairs {
        o.extend_from_slice(&v.to_be_bytes());
    }
    o
}

/// Expansion bombs: (name, body). Each is a dictionary holding `UDID` and `MessageType`/`Status` (so it reads
/// as a check-in and a report), `refs` references to one `len`-byte object, and under `refs` × 5 + `len` +
/// 200 bytes; decoded, `refs` × `len` bytes.
pub(crate) fn expansion_bombs(refs: usize, len: usize) -> Vec<(&'static str, Vec<u8>)> {
    let long = vec![b'A'; len];
    // Objects 0..5 are shared by every shape: the message's own keys and values.
    let common = || {
        vec![
            ascii(b"UDID"),
            ascii(b"0000BOMB-0000-0000-0000-000000000001"),
            ascii(b"MessageType"),
            ascii(b"Authenticate"),
            ascii(b"Status"),
            ascii(b"Idle"),
        ]
    };
    // The root: the message's keys plus `extra` (key ref, value ref) pairs.
    let root = |extra: &[(u32, u32)]| dict(&[[(0, 1), (2, 3), (4, 5)].as_slice(), extra].concat());
    let with = |objects: Vec<Vec<u8>>, extra: &[(u32, u32)]| {
        let mut all = common();
        all.extend(objects);
        all.push(root(extra));
        bplist(&all)
    };
    vec![
        // {…, "k": [s, s, s, …]}: an array of references to one long string.
        (
            "array_of_one_string",
            with(
                vec![ascii(b"k"), ascii(&long), array(&vec![7; refs])],
                &[(6, 8)],
            ),
        ),
        // The same with a data object.
        (
            "array_of_one_data",
            with(
                vec![ascii(b"k"), data(&long), array(&vec![7; refs])],
                &[(6, 8)],
            ),
        ),
        // {…, "k": {"x": s, "x": s, …}}: dictionary values (one key, repeated: the walk visits each).
        (
            "dict_values",
            with(
                vec![
                    ascii(b"k"),
                    ascii(&long),
                    ascii(b"x"),
                    dict(&vec![(8, 7); refs]),
                ],
                &[(6, 9)],
            ),
        ),
        // {…, "k": {s: 1, s: 1, …}}: dictionary keys.
        (
            "dict_keys",
            with(
                vec![
                    ascii(b"k"),
                    ascii(&long),
                    vec![0x10, 1],
                    dict(&vec![(7, 8); refs]),
                ],
                &[(6, 9)],
            ),
        ),
        // {…, "k": [[s, s, s, s], [s, s, s, s], …]}: nested, one small array referenced `refs` / 4 times.
        (
            "nested_arrays",
            with(
                vec![
                    ascii(b"k"),
                    ascii(&long),
                    array(&[7; 4]),
                    array(&vec![8; refs / 4]),
                ],
                &[(6, 9)],
            ),
        ),
        // The root's own values: `refs` distinct keys would cost input; `refs` references to one key each
        // with the long string as value.
        (
            "root_values",
            with(vec![ascii(b"k"), ascii(&long)], &vec![(6, 7); refs]),
        ),
    ]
}
