// Package rules turns kubeshaper annotations into typed, validated policy.
// It is pure: no I/O, no Kubernetes client, no kernel. Everything downstream
// (datapath, reconciler, CLI) consumes the types defined here.
//
// # Annotation grammar
//
// A value is one or more clauses separated by ";". Every clause names the
// direction it applies to, from the pod's point of view: egress (traffic the
// pod sends), ingress (traffic it receives) or both. Keywords and units are
// case-insensitive; words are separated by any run of spaces, tabs or
// newlines; spaces around "=" are allowed; a number may be separated from
// its unit ("10 mbps"). One value may not set the same direction twice.
//
//	kubeshaper.io/bandwidth   RATE DIR [burst=SIZE] [mode=drop|pace|tbf]
//	    10mbps egress; 1gbit ingress burst=64kb; 5 mbps both mode=pace
//	    RATE  number (decimals allowed) + bps kbps mbps gbps bit kbit mbit gbit,
//	          all BITS per second, decimal (k=1e3), from 8kbit to 100gbit
//	    SIZE  bytes: number + b kb mb gb (decimal, kb=1000) or kib mib gib
//	          (binary); a bare number is bytes; 0 or auto derives it from
//	          the rate; otherwise from 1500 bytes to 1gib
//	    mode  drop (BPF token bucket, default), pace (EDT + fq), tbf (kernel qdisc)
//
//	kubeshaper.io/loss        uniform DIR PERCENT | exponential DIR T |
//	                          gilbert DIR p=P [r=R] [h=H] [k=K]
//	    uniform egress 2%; exponential ingress 300; egress uniform 0.05
//	    gilbert egress p=1% r=25% h=0% k=100%
//	    PERCENT  in (0,100], the "%" is optional
//	    T        whole number in [0,1000]; P(drop) = e^(-T/100), exactly
//	    P R H K  percentages in [0,100] (P > 0): netem's gemodel, good→bad,
//	             bad→good, delivery in bad, delivery in good; defaults
//	             r = 100%-p, h = 0%, k = 100%
//
//	kubeshaper.io/duplicate   DIR PERCENT        egress 1%
//	kubeshaper.io/corrupt     DIR PERCENT        ingress 0.1%
//
//	TARGET (any bandwidth, loss, delay, duplicate or corrupt clause)
//	    to=PEER[,PEER...] port=PORT[,PORT...] proto=tcp|udp|sctp|icmp
//	    PEER   IPv4/IPv6 address or CIDR (masked), or svc:[NAMESPACE/]NAME
//	           (its cluster IPs and endpoints; one per clause); at most 16
//	    PORT   1-65535 or LOW-HIGH; source or destination; at most 8; not
//	           with proto=icmp
//	    The rule applies only to matching packets; others are only counted.
//	    Not with mode=tbf.
//
//	kubeshaper.io/delay       DURATION DIR [jitter=DURATION]
//	    50ms egress; 80ms jitter=10ms ingress
//	    Go durations (1.5ms, 2s); delay in (0,10s], jitter in [0,delay]
//
//	kubeshaper.io/program     NAME DIR [PARAM=VALUE ...]
//	    dropper egress DROP=1 PORT=80
//	    NAME   ^[a-z0-9][a-z0-9_-]{0,62}$ (no dots or slashes); case-sensitive
//	    PARAM  ^[A-Za-z_][A-Za-z0-9_]{0,63}$, at most 32, each name once
//	    VALUE  1 to 256 printable ASCII characters except space, ";" and "="
//
//	kubeshaper.io/duration    5m, 10s (from the rules' first application to
//	                          the pod; > 0, at most 366 days)
//	kubeshaper.io/until       2026-12-01T10:00:00Z (RFC 3339)
//	    End the rules of the object they are on (ParseTimeLimit); not rules
//	    themselves, so ParseAnnotations does not read them.
//
//	kubernetes.io/egress-bandwidth, kubernetes.io/ingress-bandwidth
//	    10M, 1G: a resource.Quantity in bits/s, enforced as mode=drop with an
//	    automatic burst; kubeshaper.io/bandwidth wins for a direction both set.
//	    Same range as RATE; decimal exponents beyond ±99 ("1e-999") are refused.
//
// Words in a clause may come in any order ("10 mbps egress", the ELTE prototype's
// form, and "egress 10mbps" are the same), so the direction words egress,
// ingress and both cannot name a program.
//
// A value longer than 4096 bytes, not valid UTF-8, or holding a control
// character other than tab, newline and carriage return is rejected unread.
// An invalid value drops the whole key — never part of it — and is reported
// as an *AnnotationError naming the key and the offending text; the other
// keys of the object still apply.
//
// Service policies combine with a pod's own policy through [Merge]: the pod
// wins per kind and direction.
package rules
