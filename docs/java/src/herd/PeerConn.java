package herd;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.CancelledKeyException;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.SocketChannel;
import java.util.ArrayDeque;
import java.util.Locale;
import java.util.concurrent.locks.ReentrantLock;

/**
 * What both directions of a peer link share (herd.py's PeerConn): lines in,
 * queued lines out, and the thread's loop.
 *
 * <p>Unlike a client's socket, a peer's is non-blocking, with a selector of
 * its own for its one thread. The reason is docs/spec.md's same-turn rule: a
 * flood must be in the neighbour's socket before the client gets its reply,
 * yet a neighbour that never reads must never hold up a client. So the
 * client's thread writes the flood itself, without blocking, and whatever the
 * kernel does not take is queued for the peer's own thread, which waits for
 * the socket to drain (OP_WRITE) while it waits for input (OP_READ) and for
 * its next timer (the select timeout).
 */
abstract class PeerConn {
    static final long PEER_BACKLOG = 8L * 1024 * 1024; // unsent bytes, beyond a catch-up, before a link is dropped
    static final long SILENCE_NS = 5L * Protocol.NS; // a link silent this long is dead
    static final long LINK_TIMEOUT_NS = 2L * Protocol.NS; // a dial, or a greeting, that takes longer failed
    static final long HEARTBEAT_NS = Protocol.NS; // PING this often

    final Server server;
    final long id;
    final SocketChannel channel;
    private final Selector selector;
    private final SelectionKey key;

    // Input: the connection's thread reads it, and so may a client's thread
    // (Server.catchUpWithPeers), one at a time.
    private final ReentrantLock inputLock = new ReentrantLock();
    private final ByteBuffer readBuf = ByteBuffer.allocate(64 * 1024);
    final LineBuffer lines = new LineBuffer(Protocol.MAX_PEER_LINE);
    volatile long lastHeard = System.nanoTime();

    // Output, guarded by this.
    private final ArrayDeque<ByteBuffer> queue = new ArrayDeque<>();
    private long queued;
    private long allowance = PEER_BACKLOG;
    private long written; // bytes the kernel has taken, ever
    private long catchUpEnd = -1; // the catch-up has left once written reaches this
    private String catchUpSummary;
    private long catchUpStart;
    private boolean closed;
    private String closeReason = "closed";

    PeerConn(Server server, long id, SocketChannel channel) throws IOException {
        this.server = server;
        this.id = id;
        this.channel = channel;
        channel.configureBlocking(false);
        channel.socket().setTcpNoDelay(true);
        this.selector = Selector.open();
        this.key = channel.register(selector, SelectionKey.OP_READ);
    }

    /** "peer-out Jaquez#5" or "peer-in Jaquez#7", as the log names it. */
    abstract String label();

    /** One line from the neighbour; false once the connection is closed. */
    abstract boolean lineReceived(String line);

    /** The neighbour closed its side. */
    abstract void endOfInput();

    /** Timers (greeting, heartbeat, silence); may close; returns the ms until the next one. */
    abstract long tick(long now);

    /** Called once, after the connection closed. */
    abstract void closed(String why);

    /** What the close line says about heartbeats, which are counted rather than logged. */
    abstract String heartbeats();

    synchronized boolean isClosed() {
        return closed;
    }

    synchronized String closeReason() {
        return closeReason;
    }

    /**
     * Writes now what the kernel takes, without blocking, and queues the
     * rest for this connection's thread. True if the queue is now over its
     * bound (the caller drops the link).
     */
    synchronized boolean send(byte[] data) {
        if (closed) {
            return false;
        }
        try {
            if (!queue.isEmpty()) { // the socket is full already: only queue
                queue.addLast(ByteBuffer.wrap(data));
                queued += data.length;
                return queued > allowance;
            }
            ByteBuffer buf = ByteBuffer.wrap(data);
            written += channel.write(buf);
            if (buf.hasRemaining()) {
                queue.addLast(buf);
                queued += buf.remaining();
                key.interestOps(SelectionKey.OP_READ | SelectionKey.OP_WRITE);
                selector.wakeup();
            }
        } catch (IOException | CancelledKeyException e) {
            close("write failed: " + e.getMessage());
            return false;
        }
        caughtUp();
        return queued > allowance;
    }

    /** The socket can take more: write what is queued. */
    private synchronized void flushQueue() {
        try {
            while (!queue.isEmpty()) {
                ByteBuffer buf = queue.peekFirst();
                int n = channel.write(buf);
                written += n;
                queued -= n;
                if (buf.hasRemaining()) {
                    break;
                }
                queue.pollFirst();
            }
            if (queue.isEmpty()) {
                key.interestOps(SelectionKey.OP_READ);
                allowance = PEER_BACKLOG; // any catch-up has drained
            }
        } catch (IOException | CancelledKeyException e) {
            close("write failed: " + e.getMessage());
            return;
        }
        caughtUp();
    }

    /**
     * Sends every known position, then a PING that marks where the catch-up
     * ends, so the receiver can log it as one summary line. The queue may
     * hold this much more than its usual bound while it drains.
     */
    synchronized void sendCatchUp(String linkName, java.util.List<String> atLines) {
        StringBuilder text = new StringBuilder(atLines.size() * 64 + 8);
        for (String at : atLines) {
            text.append(at).append('\n');
        }
        text.append("PING\n");
        byte[] data = text.toString().getBytes(java.nio.charset.StandardCharsets.ISO_8859_1);
        catchUpStart = System.nanoTime();
        catchUpEnd = written + queued + data.length;
        catchUpSummary = "link " + linkName + ": catch-up of " + atLines.size() + " positions sent ("
                + (data.length - 5) + " bytes";
        allowance = PEER_BACKLOG + data.length;
        send(data);
    }

    private void caughtUp() { // with this locked
        if (catchUpEnd >= 0 && written >= catchUpEnd) {
            catchUpEnd = -1;
            server.log.event(catchUpSummary + ", in " + millis(System.nanoTime() - catchUpStart) + " ms)");
        }
    }

    static String millis(long ns) {
        return String.format(Locale.ROOT, "%.3f", ns / 1e6);
    }

    /**
     * Reads and handles whatever has arrived, without blocking. The owner
     * thread also handles end of file and errors; a helping thread leaves
     * those to the owner.
     */
    final void readInput(boolean owner) {
        inputLock.lock();
        try {
            while (!isClosed()) {
                readBuf.clear();
                int n;
                try {
                    n = channel.read(readBuf);
                } catch (IOException e) {
                    if (owner) {
                        close("read error: " + e.getMessage());
                    }
                    return;
                }
                if (n == 0) {
                    return;
                }
                if (n < 0) {
                    if (owner) {
                        endOfInput();
                    }
                    return;
                }
                lastHeard = System.nanoTime();
                if (lines.feed(readBuf.array(), n, this::lineReceived)) {
                    close("line too long");
                    return;
                }
                if (n < readBuf.capacity()) {
                    return; // drained, most likely: the selector says if not
                }
            }
        } finally {
            inputLock.unlock();
        }
    }

    /** The connection's thread: wait for input, output room or a timer, until closed. */
    final void serve() {
        try {
            while (!isClosed()) {
                long wait = tick(System.nanoTime());
                if (isClosed()) {
                    break;
                }
                selector.select(Math.max(1, wait));
                if (selector.selectedKeys().isEmpty()) {
                    continue;
                }
                selector.selectedKeys().clear();
                int ready;
                try {
                    ready = key.readyOps();
                } catch (CancelledKeyException e) {
                    break; // closed by another thread
                }
                if ((ready & SelectionKey.OP_WRITE) != 0) {
                    flushQueue();
                }
                if ((ready & SelectionKey.OP_READ) != 0) {
                    readInput(true);
                }
            }
        } catch (IOException e) {
            close("select failed: " + e.getMessage());
        } catch (RuntimeException e) { // a bug must cost the link (which comes back), not the thread
            close("internal error: " + e);
        } finally {
            try {
                selector.close(); // deregisters the channel, which lets its close finish
            } catch (IOException e) {
                // closing anyway
            }
        }
    }

    /** Closes the connection (any thread); what is queued is dropped. */
    final void close(String why) {
        synchronized (this) {
            if (closed) {
                return;
            }
            closed = true;
            closeReason = why;
            queue.clear();
            queued = 0;
        }
        server.log.event(label() + " closed: " + why + heartbeats());
        try {
            channel.close();
        } catch (IOException e) {
            // closed anyway
        }
        selector.wakeup();
        closed(why);
    }
}
