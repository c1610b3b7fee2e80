#!/usr/bin/env python3
# Lists the import cycles between the top-level modules of a crate:
#   python3 scripts/modcycles.py backfill-core/src [-v] [--fail]
# -v also prints every module with the modules it uses; --fail exits 1
# when there is a cycle (scripts/lint.sh runs it so).

import os, re, sys
root = sys.argv[1]
mods = {}
for dp, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        p = os.path.join(dp, f)
        rel = os.path.relpath(p, root)
        top = rel.split(os.sep)[0].replace('.rs', '')
        if top in ('lib', 'main'): continue
        mods.setdefault(top, set())
        txt = open(p).read()
        # strip test modules
        txt = re.split(r'#\[cfg\(test\)\]', txt)[0]
        # comments and doc links do not make a module depend on another
        txt = '\n'.join(l for l in txt.split('\n') if not l.lstrip().startswith('//'))
        for m in re.finditer(r'crate::([A-Za-z_]+)', txt):
            mods[top].add(m.group(1))
        for m in re.finditer(r'crate::\{([^;]*?)\};', txt, re.S):
            for part in re.split(r',', m.group(1)):
                part = part.strip()
                if part:
                    mods[top].add(re.match(r'[A-Za-z_]+', part).group(0))
        for m in re.finditer(r'super::([a-z_]+)', txt):
            if os.sep in rel and rel.count(os.sep) == 1 and f == 'mod.rs':
                pass
lib = open(os.path.join(root, 'lib.rs')).read()
reexp = {}
for m in re.finditer(r'pub use ([a-z_]+)::(\{[^}]*\}|[A-Za-z_]+)', lib):
    names = re.findall(r'[A-Za-z_]+', m.group(2))
    for n in names: reexp[n] = m.group(1)
graph = {}
for k, deps in mods.items():
    out = set()
    for d in deps:
        if d in mods: out.add(d)
        elif d in reexp: out.add(reexp[d])
    out.discard(k)
    graph[k] = out
# also re-exported type names used as crate::Type
for k in mods:
    pass
# Tarjan
idx = {}; low = {}; st = []; on = set(); sccs = []; c = [0]
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in graph.get(v, ()):
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        sccs.append(comp)
sys.setrecursionlimit(10000)
for v in graph:
    if v not in idx: sc(v)
cyc = [s for s in sccs if len(s) > 1]
for s in cyc: print('cycle:', sorted(s))
if '-v' in sys.argv:
    for k in sorted(graph): print(k, '->', sorted(graph[k]))
print('modules', len(graph), 'in cycles', sum(len(s) for s in cyc))
if '--fail' in sys.argv and cyc:
    sys.exit(1)
