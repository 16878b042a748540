//! Just enough DER to mutate a certificate without breaking its structure: a tree of
//! tag-length-value nodes, read and written again with the lengths made right.

/// One TLV. Constructed nodes whose content reads as TLVs keep their children.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) tag: u8,
    pub(crate) body: Body,
}

#[derive(Debug, Clone)]
pub(crate) enum Body {
    Bytes(Vec<u8>),
    Children(Vec<Node>),
}

/// Deepest nesting read as children; deeper content stays bytes.
const MAX_DEPTH: usize = 16;

/// Reads a sequence of TLVs that covers `bytes` exactly; `None` if it does not.
pub(crate) fn read(bytes: &[u8]) -> Option<Vec<Node>> {
    read_at(bytes, 0)
}

fn read_at(mut bytes: &[u8], depth: usize) -> Option<Vec<Node>> {
    let mut nodes = Vec::new();
    while !bytes.is_empty() {
        let (node, rest) = read_one(bytes, depth)?;
        nodes.push(node);
        bytes = rest;
    }
    Some(nodes)
}

fn read_one(bytes: &[u8], depth: usize) -> Option<(Node, &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // high tag numbers: not in the certificates mutated here
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 3 {
            return None;
        }
        let (digits, after) = rest.split_at_checked(count)?;
        rest = after;
        digits.iter().fold(0, |n, &d| n << 8 | usize::from(d))
    };
    let (content, rest) = rest.split_at_checked(len)?;
    let children = (tag & 0x20 != 0 && depth < MAX_DEPTH)
        .then(|| read_at(content, depth + 1))
        .flatten();
    let body = match children {
        Some(children) => Body::Children(children),
        None => Body::Bytes(content.to_vec()),
    };
    Some((Node { tag, body }, rest))
}

/// Writes nodes as DER, each length in its shortest form.
pub(crate) fn write(nodes: &[Node], out: &mut Vec<u8>) {
    for node in nodes {
        let mut content = Vec::new();
        match &node.body {
            Body::Bytes(bytes) => content.extend_from_slice(bytes),
            Body::Children(children) => write(children, &mut content),
        }
        out.push(node.tag);
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let digits: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|&d| d == 0)
                .collect();
            out.push(0x80 | digits.len() as u8);
            out.extend_from_slice(&digits);
        }
        out.extend_from_slice(&content);
    }
}

/// Every node, depth first, as paths of child indexes from the top.
pub(crate) fn paths(nodes: &[Node]) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    collect(nodes, &mut Vec::new(), &mut out);
    out
}

fn collect(nodes: &[Node], path: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
    for (i, node) in nodes.iter().enumerate() {
        path.push(i);
        out.push(path.clone());
        if let Body::Children(children) = &node.body {
            collect(children, path, out);
        }
        path.pop();
    }
}

/// The list that holds the node at `path`, and the node's index in it.
pub(crate) fn parent_of<'a>(
    nodes: &'a mut Vec<Node>,
    path: &[usize],
) -> Option<(&'a mut Vec<Node>, usize)> {
    let (&last, above) = path.split_last()?;
    let mut list = nodes;
    for &i in above {
        match &mut list.get_mut(i)?.body {
            Body::Children(children) => list = children,
            Body::Bytes(_) => return None,
        }
    }
    (last < list.len()).then_some((list, last))
}
