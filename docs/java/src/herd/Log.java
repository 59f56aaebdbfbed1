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
 * The event log (SPEC section 6; src/log.rs). Any thread may call
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
            // Stamped under the lock, so the file's stamps never go backwards.
            Instant now = Instant.now();
            if (now.getEpochSecond() != stampSecond) {
                stampSecond = now.getEpochSecond();
                LocalDateTime t = LocalDateTime.ofEpochSecond(stampSecond, 0, ZoneOffset.UTC);
                stampPrefix = String.format("%04d-%02d-%02dT%02d:%02d:%02d.", t.getYear(), t.getMonthValue(),
                        t.getDayOfMonth(), t.getHour(), t.getMinute(), t.getSecond());
            }
            int micros = now.getNano() / 1000;
            boolean wake = pending.length() == 0;
            pending.append(stampPrefix);
            String digits = Integer.toString(micros);
            for (int i = digits.length(); i < 6; i++) {
                pending.append('0');
            }
            pending.append(digits).append("Z ").append(text).append('\n');
            if (wake) {
                notify();
            }
        }
    }

    private void writeLoop() {
        while (true) {
            StringBuilder batch;
            boolean last;
            boolean fresh;
            synchronized (this) {
                while (pending.length() == 0 && !closed && !reopen) {
                    try {
                        wait();
                    } catch (InterruptedException e) {
                        return;
                    }
                }
                batch = pending;
                pending = new StringBuilder(1 << 16);
                last = closed;
                fresh = reopen;
                reopen = false;
            }
            if (fresh) {
                // Lines before the SIGHUP go to the old file, the rest to the new one.
                write(batch.toString().getBytes(StandardCharsets.UTF_8));
                batch.setLength(0);
                try {
                    FileOutputStream next = new FileOutputStream(path.toFile(), true);
                    file.close();
                    file = next;
                } catch (IOException e) {
                    System.err.println("herd.sh: cannot reopen the log: " + e.getMessage());
                }
            }
            if (batch.length() > 0) {
                write(batch.toString().getBytes(StandardCharsets.UTF_8));
            }
            if (last) {
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
