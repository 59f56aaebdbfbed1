package herd;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.SynchronousQueue;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * What every thread shares (Herd plus the EventLoop's shared parts in Rust):
 * the store, the links, flooding, connection numbers, the log, and the pool
 * of writer threads.
 */
final class Server {
    /** Stack of a client's or writer's thread: they never recurse deeply (the JDK default is 1 MiB). */
    static final long SMALL_STACK = 256 * 1024;

    final String name;
    final Log log;
    final Store store = new Store();
    final List<Link> links = new ArrayList<>();
    final Map<String, Link> linksByName = new HashMap<>();
    final ExecutorService writers;
    Places places; // set once, before any connection is accepted
    private final AtomicLong connIds = new AtomicLong();

    Server(String name, Log log) {
        this.name = name;
        this.log = log;
        // Writers exist only while some client has output on its way; idle
        // ones are kept a minute for the next burst, then end.
        this.writers = new ThreadPoolExecutor(0, Integer.MAX_VALUE, 60, TimeUnit.SECONDS,
                new SynchronousQueue<>(), threads("writer", SMALL_STACK));
    }

    void addLink(String neighbour, InetSocketAddress addr, String shown) {
        Link link = new Link(this, neighbour, addr, shown);
        links.add(link);
        linksByName.put(neighbour, link);
    }

    /** Connection numbers count every connection opened or accepted. */
    long nextConnId() {
        return connIds.incrementAndGet();
    }

    /**
     * A new position goes to every neighbour whose link is up, except the one
     * it came from (event_loop/peers.rs: flood). The write is non-blocking, in
     * the caller's thread, so the update is in the neighbour's socket before
     * the caller replies to its client. Not up: the catch-up will carry it.
     */
    void flood(String at, Link cameFrom) {
        byte[] line = (at + "\n").getBytes(StandardCharsets.ISO_8859_1);
        for (Link link : links) {
            PeerOut conn = link == cameFrom ? null : link.upConn();
            if (conn == null || conn.isClosed()) {
                continue;
            }
            boolean over = conn.send(line);
            log.event("peer-out " + link.name + "#" + conn.id + " > " + Protocol.esc(at));
            if (over) {
                conn.close("peer output backlog over its bound");
            }
        }
    }

    /**
     * Before a lookup, handle whatever the neighbours have already sent: the
     * Rust loop handles peers before clients in each turn, so an update that
     * reached this server before a client's WHATSAT is known to it. Here each
     * peer has its own thread, which may not have run yet.
     */
    void catchUpWithPeers() {
        for (Link link : links) {
            PeerIn in = link.incoming();
            if (in != null) {
                in.readInput(false);
            }
        }
    }

    /** Daemon threads named prefix-N, with the given stack size (0: the JVM's default). */
    static ThreadFactory threads(String prefix, long stackSize) {
        AtomicInteger n = new AtomicInteger();
        return r -> {
            Thread t = new Thread(null, r, prefix + "-" + n.incrementAndGet(), stackSize);
            t.setDaemon(true);
            return t;
        };
    }

    /** host:port as the log shows it ([v6]:port for IPv6). */
    static String show(InetAddress host, int port) {
        String text = host.getHostAddress();
        if (text.contains(":")) {
            int zone = text.indexOf('%');
            String compressed = HerdFile.compressIpv6(zone < 0 ? text : text.substring(0, zone));
            return "[" + (compressed != null ? compressed : text) + "]:" + port;
        }
        return text + ":" + port;
    }
}
