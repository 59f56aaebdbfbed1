package herd;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketTimeoutException;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;

/**
 * Our link to one neighbour (src/herd/link.rs; herd.py's Link), with a
 * thread of its own that runs its state machine as straight-line code:
 * Backoff -> Dialing -> Greeting -> Up, and back to Backoff on any failure.
 * Every transition is logged. The backoff is a timed wait on this object's
 * monitor, which a HELLO from the neighbour cuts short (the quick rejoin).
 */
final class Link implements Runnable {
    static final double BACKOFF_MIN = 0.1;
    static final double BACKOFF_MAX = 3.2;

    final String name;
    private final Server server;
    private final InetSocketAddress addr;
    private final String shown;

    // Guarded by this.
    private String state = "Backoff";
    private int failures;
    private boolean rejoin;

    private final CountDownLatch firstDial = new CountDownLatch(1); // HELLO sent, or the dial failed
    private volatile PeerOut up; // our connection while the link is Up
    private volatile PeerIn incoming; // the connection the neighbour dialed to us

    Link(Server server, String name, InetSocketAddress addr, String shown) {
        this.server = server;
        this.name = name;
        this.addr = addr;
        this.shown = shown;
    }

    PeerOut upConn() {
        return up;
    }

    PeerIn incoming() {
        return incoming;
    }

    private void setState(String to, String why) { // with this locked
        server.log.event("link " + name + ": " + state + " => " + to + " (" + why + ")");
        state = to;
    }

    @Override
    public void run() {
        while (true) {
            backOff(connectAndServe());
        }
    }

    /** Waits (a bounded time) until the first dial has sent its HELLO or failed. */
    void awaitFirstDial(long ms) throws InterruptedException {
        firstDial.await(ms, TimeUnit.MILLISECONDS);
    }

    /** Dials, greets and serves one connection; returns why it ended. */
    private String connectAndServe() {
        long id = server.nextConnId();
        synchronized (this) {
            setState("Dialing", "dialing " + shown);
        }
        SocketChannel channel = null;
        PeerOut conn;
        try {
            channel = SocketChannel.open();
            channel.socket().connect(addr, (int) (PeerConn.LINK_TIMEOUT_NS / 1_000_000L));
            conn = new PeerOut(server, this, id, channel);
        } catch (SocketTimeoutException e) {
            closeQuietly(channel);
            firstDial.countDown();
            return "timed out";
        } catch (IOException e) {
            closeQuietly(channel);
            firstDial.countDown();
            return "dial failed: " + e.getMessage();
        }
        conn.send(("HELLO " + server.name + "\n").getBytes(StandardCharsets.ISO_8859_1));
        server.log.event("peer-out " + name + "#" + id + " > HELLO " + server.name);
        firstDial.countDown();
        synchronized (this) {
            setState("Greeting", "connected, HELLO sent");
        }
        conn.serve(); // until the connection closes
        up = null;
        return conn.closeReason();
    }

    /** WELCOME: the link is up; the neighbour gets every position we know. */
    void linkUp(PeerOut conn) {
        // Holding the connection's lock, floods that see the link Up queue
        // behind the catch-up, and none is missed: a position stored before
        // `up` is set is in the snapshot taken after it.
        synchronized (conn) {
            synchronized (this) {
                failures = 0;
                setState("Up", "WELCOME received");
                up = conn;
            }
            conn.sendCatchUp(name, server.store.atLines());
        }
    }

    /** The link failed: wait 100 ms doubling to 3.2 s, with jitter, or until the neighbour says HELLO. */
    private synchronized void backOff(String why) {
        double base = Math.min(BACKOFF_MIN * Math.pow(2, Math.min(failures, 10)), BACKOFF_MAX);
        double delay = base * (0.75 + 0.5 * ThreadLocalRandom.current().nextDouble());
        failures++;
        long delayMs = (long) (delay * 1000);
        rejoin = false;
        setState("Backoff", why + "; retry in " + delayMs + " ms");
        long deadline = System.nanoTime() + delayMs * 1_000_000L;
        while (!rejoin) {
            long left = (deadline - System.nanoTime()) / 1_000_000L;
            if (left <= 0) {
                break;
            }
            try {
                wait(left);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
        }
        rejoin = false;
    }

    /**
     * A neighbour said HELLO: this is now its link to us. If our link to it
     * is waiting out a backoff, the neighbour is evidently back: dial now.
     */
    void greeted(PeerIn conn) {
        PeerIn old;
        synchronized (this) {
            old = incoming;
            incoming = conn;
        }
        if (old != null && old != conn) {
            old.close("replaced by a new link from the same neighbour");
        }
        server.log.event("link from " + name + ": up");
        synchronized (this) {
            if (state.equals("Backoff") && !rejoin) {
                failures = 0;
                server.log.event("link " + name + ": HELLO from it, dialing back now");
                rejoin = true;
                notifyAll();
            }
        }
    }

    /** The incoming connection closed; true if it was still this link's. */
    synchronized boolean clearIncoming(PeerIn conn) {
        if (incoming != conn) {
            return false;
        }
        incoming = null;
        return true;
    }

    private static void closeQuietly(SocketChannel c) {
        if (c != null) {
            try {
                c.close();
            } catch (IOException e) {
                // closed anyway
            }
        }
    }
}
