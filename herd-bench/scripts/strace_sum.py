import re,sys,glob,collections,datetime
# Usage: strace_sum.py OUT (the folder profile-peer-path.sh strace wrote).
# Summarise strace -f -ttt output per server over the window all five were
# traced: calls by name, reads returning EAGAIN, writes of 0 bytes,
# epoll_waits returning 0; IAMATs counted from Riley's log in that window.
d=sys.argv[1]
line_re=re.compile(r'^(\d+)\s+(\d+\.\d+)\s+(.*)$')
files=sorted(glob.glob(d+'/st.*'))
spans=[]
for f in files:
    ts=[float(m.group(2)) for m in (line_re.match(l) for l in open(f,errors='replace')) if m]
    spans.append((ts[0],ts[-1]))
t0=max(s[0] for s in spans); t1=min(s[1] for s in spans)
tot=collections.Counter(); rows=[]
for f in files:
    name=f.split('st.')[-1]; c=collections.Counter()
    for l in open(f,errors='replace'):
        m=line_re.match(l)
        if not m or not (t0<=float(m.group(2))<=t1): continue
        rest=m.group(3)
        if rest.endswith('<unfinished ...>'): continue
        r=re.match(r'<\.\.\. (\w+) resumed>.*=\s+(-?\d+|\?)(.*)$',rest) or re.match(r'(\w+)\(.*=\s+(-?\d+|\?)(.*)$',rest)
        if not r: continue
        sc,ret,tail=r.groups()
        c[sc]+=1
        if 'EAGAIN' in tail: c[sc+':EAGAIN']+=1
        if ret=='0' and sc in('write','writev','sendto','sendmsg','epoll_wait','epoll_pwait','epoll_pwait2','read','recvfrom'): c[sc+':0']+=1
    rows.append((name,c)); tot.update(c)
kept=open(d+'/kept').read().split()[1]
log=glob.glob(kept+'/rust-iamat/rust-Riley.log')[0]
n=0
for l in open(log,errors='replace'):
    if ' < IAMAT ' not in l: continue
    ts=datetime.datetime.strptime(l[:26],'%Y-%m-%dT%H:%M:%S.%f').replace(tzinfo=datetime.timezone.utc).timestamp()
    if t0<=ts<=t1: n+=1
print(f'{d}: common window {t1-t0:.2f} s, IAMATs at Riley in it: {n}')
for name,c in rows:
    print(' ',name, ' '.join(f'{k}={c[k]}' for k in sorted(c, key=lambda k:-c[k])))
print('  herd-wide per IAMAT:', ' '.join(f'{k}={tot[k]/max(n,1):.2f}' for k in sorted(tot,key=lambda k:-tot[k])))
