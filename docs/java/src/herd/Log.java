package herd;

import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.time.LocalDateTime;
import java.time.ZoneOffset;

/**
 * The event log (docs/spec.md §6; src/log.rs). Any thread may call
 * {@link #event}: it only appends to a buffer under a lock. One log thread
 * writes what has gathered in one write() call, so a burst from many threads
 * costs one system call, and no connection thread ever waits on the disk.
 * {@link #close} writes everything still buffered: a clean stop loses nothing.
 */
final class Log {
    private final Path path;
    private FileOutputStream file; // only the log thread touches it after the constructor
    private StringBuilder pending = new StringBuilder(1 << 16); // guarded by this
    private boolean closed; // guarded by this
    private boolean reopen; // guarded by this
    private long stampSecond = Long.MIN_VALUE; // guarded by this
    private String stampPrefix = "";
    private final Thread writer;

    Log(String file) throws IOException {
        this.path = Path.of(file);
        Path folder = path.toAbsolutePath().getParent();
        if (folder != null) {
            Files.createDirectories(folder);
        }
        this.file = new FileOutputStream(file, true);
        writer = new Thread(this::writeLoop, "log");
        writer.setDaemon(true);
        writer.start();
    }

    /** Appends one event, stamped now (RFC 3339, UTC, microseconds). */
    void event(String text) {
        synchronized (this) {
            if (closed) {
                return;
            }
            boolean wake = pending.length() == 0;
            appendLine(pending, text);
            if (wake) {
                notify();
            }
        }
    }

    /** One stamped line into {@code to}; stamped under the lock, so the file's stamps never go backwards. */
    private void appendLine(StringBuilder to, String text) { // with this locked
        Instant now = Instant.now();
        if (now.getEpochSecond() != stampSecond) {
            stampSecond = now.getEpochSecond();
            LocalDateTime t = LocalDateTime.ofEpochSecond(stampSecond, 0, ZoneOffset.UTC);
            stampPrefix = String.format("%04d-%02d-%02dT%02d:%02d:%02d.", t.getYear(), t.getMonthValue(),
                    t.getDayOfMonth(), t.getHour(), t.getMinute(), t.getSecond());
        }
        String digits = Integer.toString(now.getNano() / 1000);
        to.append(stampPrefix);
        for (int i = digits.length(); i < 6; i++) {
            to.append('0');
        }
        to.append(digits).append("Z ").append(text).append('\n');
    }

    private void writeLoop() {
        while (true) {
            boolean rotate;
            synchronized (this) {
                while (pending.length() == 0 && !closed && !reopen) {
                    try {
                        wait();
                    } catch (InterruptedException e) {
                        return;
                    }
                }
                rotate = reopen;
                reopen = false;
            }
            FileOutputStream next = null;
            String failed = null;
            if (rotate) { // SIGHUP: open the path anew first, so a failure keeps the old file
                try {
                    next = new FileOutputStream(path.toFile(), true);
                } catch (IOException e) {
                    failed = e.getMessage();
                    System.err.println("herd.sh: SIGHUP: cannot reopen the log: " + failed);
                }
            }
            StringBuilder batch;
            boolean last;
            synchronized (this) {
                batch = pending;
                pending = new StringBuilder(1 << 16);
                last = closed;
                if (next != null) {
                    // The new file starts with this line: every line before it
                    // (stamped earlier, under this lock) goes to the old file.
                    appendLine(pending, "log reopened on SIGHUP");
                } else if (failed != null) {
                    appendLine(batch, "SIGHUP: cannot reopen the log: " + failed);
                }
            }
            if (batch.length() > 0) {
                write(batch.toString().getBytes(StandardCharsets.UTF_8));
            }
            if (next != null) {
                try {
                    file.close();
                } catch (IOException e) {
                    // the old file is done with either way
                }
                file = next;
            }
            if (last) {
                if (pending.length() > 0) { // a SIGHUP raced the stop: its line still goes out
                    write(pending.toString().getBytes(StandardCharsets.UTF_8));
                }
                return;
            }
        }
    }

    private void write(byte[] data) {
        try {
            file.write(data);
        } catch (IOException e) { // a failing log disk must not stop the server
            System.err.println("herd.sh: cannot write the log: " + e.getMessage());
        }
    }

    /** SIGHUP: reopen the file (after logrotate moved it); the log thread does it. */
    void reopen() {
        synchronized (this) {
            reopen = true;
            notify();
        }
    }

    /** Writes what is buffered and stops taking lines. */
    void close() {
        synchronized (this) {
            closed = true;
            notify();
        }
        try {
            writer.join(5000); // the log thread closes nothing: the process is about to exit
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
