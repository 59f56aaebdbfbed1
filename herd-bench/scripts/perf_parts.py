import sys,re,collections
# Usage: perf_parts.py SCRIPT.txt (perf script -F comm,pid,ip,sym,dso output).
# Categorise perf script samples by the innermost frame that names a part of
# the peer path; kernel samples by the user-space caller of the syscall.
CATS=[
 ('log',      ['log::Log::line','log::Log::tick','Log::stamp_now','log_received','note_update','log::is_plain','Escaped as core::fmt','Log::event']),
 ('parse',    ['peer::update_key','parse_canonical_update','parse_peer_message','peer::parse_update','LineReader::feed','client::parse_time','check_location','parse_location','from_utf8']),
 ('store',    ['store::Store','store::index','Herd::persist','recent::','Recent::push','peer_update_line','Herd::peer_update']),
 ('dispatch', ['PeerInProtocol::line_received','PeerOutProtocol::line_received']),
 ('forward',  ['send_update','write_update','peers::<impl proxy_herd::event_loop::EventLoop>::flood','EventLoop::flood','EventLoop::apply','flush_dirty_peers']),
]
SYS=[('read',['__libc_recv','read_once','::read ','::read (','Read>::read']),
     ('log write',['Log::flush','flush_state','File as std::io::Write','__GI___libc_write']),
     ('peer send',['__libc_send','sendto','flush_dirty_peers','EventLoop::flush']),
     ('epoll_wait',['epoll_wait','Poll::poll'])]
samples=[];cur=None
for l in open(sys.argv[1],errors='replace'):
    if not l.strip():
        if cur: samples.append(cur); cur=None
        continue
    if not l.startswith((' ','\t')):
        cur=[]; continue
    parts=l.strip().split(None,1)
    if cur is not None and len(parts)==2: cur.append(parts[1])
if cur: samples.append(cur)
c=collections.Counter(); sysc=collections.Counter(); other=collections.Counter()
for st in samples:
    if not st: continue
    leafk='[kernel' in st[0]
    if leafk or 'vdso' in st[0] and False:
        user=[f for f in st if '[kernel' not in f]
        k='kernel: other'
        for name,pats in SYS:
            if any(p in f for f in user[:12] for p in pats):
                k='kernel: '+name; break
        c[k]+=1
        if k=='kernel: other': other['K '+' | '.join(x[:40] for x in user[:3])]+=1
        continue
    hit=None
    for f in st:
        for name,pats in CATS:
            if any(p in f for p in pats): hit=name; break
        if hit: break
    if hit is None:
        hit='loop, alloc, clock, other'; other[st[0][:90]]+=1
    c[hit]+=1
n=sum(c.values())
for k,v in sorted(c.items(), key=lambda x:-x[1]): print(f'{k:28s} {v:5d} {100*v/n:5.1f}%')
print('total',n)
print('-- top of "other":')
for k,v in other.most_common(12): print(f'   {v:4d} {k}')
