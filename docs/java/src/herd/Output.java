package herd;

import java.io.IOException;
import java.io.OutputStream;
import java.util.ArrayDeque;
import java.util.concurrent.Executor;

/**
 * A client's replies on their way out. The client's own thread must never
 * block in write() (it would stop reading, and a client that never reads
 * would hold it forever), so {@link #send} only queues; a writer borrowed from
 * a shared pool drains the queue with blocking writes, one write per batch,
 * and goes back to the pool when the queue is empty. An idle connection
 * therefore costs no writer thread. What is queued and not yet taken by the
 * kernel is counted, which is what the 1 MiB bound is about (docs/spec.md §4).
 */
final class Output {
    /** What happens when a write fails or the bound is passed. */
    interface Failed {
        void failed(String why);
    }

    private final OutputStream out;
    private final Executor writers;
    private final Failed onFail;
    private final Runnable onDrainedClose;
    /** Batches are joined into writes of up to this much. */
    static final int SLICE = 64 * 1024;

    private final ArrayDeque<byte[]> queue = new ArrayDeque<>(4); // guarded by this
    private long unsent; // guarded by this: queued bytes plus the write in progress
    private boolean writing; // guarded by this: a writer owns the queue
    private boolean closing; // guarded by this: close once drained
    private boolean closed; // guarded by this

    Output(OutputStream out, Executor writers, Failed onFail, Runnable onDrainedClose) {
        this.out = out;
        this.writers = writers;
        this.onFail = onFail;
        this.onDrainedClose = onDrainedClose;
    }

    /** Queues one batch; true if more than {@code limit} bytes are now unsent. */
    synchronized boolean send(byte[] data, long limit) {
        if (closed || closing) {
            return false; // nobody is listening any more: drop it
        }
        queue.addLast(data);
        unsent += data.length;
        if (!writing) {
            writing = true;
            try {
                writers.execute(this::drain);
            } catch (RuntimeException | OutOfMemoryError e) { // no thread to be had
                writing = false;
                closed = true;
                queue.clear();
                onFail.failed("cannot start a writer: " + e); // the client's lock is ours already
                return false;
            }
        }
        return unsent > limit;
    }

    synchronized long unsent() {
        return unsent;
    }

    /** Closes the connection once everything queued is written (after EOF). */
    void closeWhenDrained() {
        boolean now;
        synchronized (this) {
            if (closed || closing) {
                return;
            }
            closing = true;
            now = !writing;
            if (now) {
                closed = true;
            }
        }
        if (now) {
            onDrainedClose.run();
        }
    }

    /** Stops writing: the connection is being closed. */
    synchronized void close() {
        closed = true;
        queue.clear();
    }

    private void drain() {
        while (true) {
            byte[] chunk;
            synchronized (this) {
                if (closed || queue.isEmpty()) {
                    writing = false;
                    if (closed || !closing) {
                        return;
                    }
                    closed = true;
                    chunk = null;
                } else {
                    chunk = take();
                }
            }
            if (chunk == null) {
                onDrainedClose.run(); // drained after EOF: now close
                return;
            }
            try {
                out.write(chunk);
            } catch (IOException e) {
                synchronized (this) {
                    writing = false;
                    closed = true;
                    queue.clear();
                }
                onFail.failed("write failed: " + e.getMessage());
                return;
            }
            synchronized (this) {
                unsent -= chunk.length;
            }
        }
    }

    /**
     * The next write: queued batches, whole, up to {@link #SLICE} bytes (a
     * larger batch goes alone). Writing in slices keeps {@code unsent} true:
     * a blocking write says nothing until it is done, so everything in it
     * counts as unsent until then, even what the kernel took long before.
     */
    private byte[] take() { // with this locked
        if (queue.size() == 1 || queue.peekFirst().length >= SLICE) {
            return queue.pollFirst();
        }
        int n = 0;
        int count = 0;
        for (byte[] b : queue) {
            if (count > 0 && n + b.length > SLICE) {
                break;
            }
            n += b.length;
            count++;
        }
        byte[] all = new byte[n];
        int at = 0;
        for (int i = 0; i < count; i++) {
            byte[] b = queue.pollFirst();
            System.arraycopy(b, 0, all, at, b.length);
            at += b.length;
        }
        return all;
    }
}
