package herd;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.ArrayDeque;
import java.util.List;

/**
 * One client connection, served by its own thread (event_loop/clients.rs;
 * herd.py's ClientProtocol). The thread blocks in read(), handles every line
 * of what it read, and queues the replies of that read as one batch for
 * {@link Output}. A WHATSAT goes to the Places workers; the replies behind it
 * are held in request order until its answer comes back (Replies/Held in the
 * Rust loop), so the thread goes on reading meanwhile.
 */
final class ClientConn implements Runnable {
    static final long MAX_BACKLOG = 1024 * 1024; // unread replies beyond this disconnect the client
    static final int MAX_WAITING = 64; // WHATSATs waiting for Places on one connection

    final long id;
    private final Server server;
    private final Socket socket;
    private final String addr;
    private Output out;

    /** A reply held behind a WHATSAT; {@code request} is 0 for a reply that is ready. */
    private static final class Slot {
        final long request;
        byte[] reply;

        Slot(long request, byte[] reply) {
            this.request = request;
            this.reply = reply;
        }
    }

    // All guarded by this.
    private final ArrayDeque<Slot> held = new ArrayDeque<>(2);
    private long heldBytes;
    private int waiting;
    private final ByteArrayOutputStream batch = new ByteArrayOutputStream(256);
    private boolean eof;
    private boolean closed;

    ClientConn(Server server, Socket socket, long id) {
        this.server = server;
        this.socket = socket;
        this.id = id;
        this.addr = Server.show(socket.getInetAddress(), socket.getPort());
    }

    @Override
    public void run() {
        Log log = server.log;
        InputStream in;
        try {
            in = socket.getInputStream();
            out = new Output(socket.getOutputStream(), server.writers, this::close, this::closeSocket);
        } catch (IOException e) {
            log.event("client " + addr + " lost at once: " + e.getMessage());
            closeSocket();
            return;
        }
        log.event("client#" + id + " " + addr + " connected");
        LineBuffer lines = new LineBuffer(Protocol.MAX_LINE);
        // Small for an idle connection; doubled while reads fill it, up to one line's limit.
        byte[] buf = new byte[2048];
        int unanswered = 0; // bytes read since the last replies left
        try {
            while (true) {
                int n = in.read(buf);
                if (n < 0) {
                    break;
                }
                unanswered += n;
                boolean tooLong = lines.feed(buf, n, this::lineReceived);
                // Floods have left (lineReceived wrote them) before this read's replies do.
                if (tooLong) {
                    close("line longer than 64 KiB");
                    return;
                }
                if (n == buf.length) {
                    if (buf.length < Protocol.MAX_LINE) {
                        buf = new byte[buf.length * 2];
                    }
                    // More has arrived with this: read it before replying, so a
                    // pipelined batch is answered in one write; but reply at
                    // least every 64 KiB read, as the Rust loop does, or a
                    // client that writes megabytes before it reads would be
                    // owed them all at once.
                    if (unanswered < Protocol.MAX_LINE && in.available() > 0) {
                        continue;
                    }
                }
                unanswered = 0;
                if (!flush()) {
                    return;
                }
            }
        } catch (IOException e) {
            close("connection lost: " + e.getMessage());
            return;
        } catch (RuntimeException e) { // a bug must cost one connection, not a thread and a socket
            close("internal error: " + e);
            return;
        }
        String last = lines.finish();
        if (last != null) {
            lineReceived(last);
        }
        log.event("client#" + id + " sent EOF");
        synchronized (this) {
            eof = true;
        }
        flush(); // closes too, once nothing more is owed
    }

    /** Herd::client_line: one line, answered into this read's batch. */
    private boolean lineReceived(String line) {
        Log log = server.log;
        log.event("client#" + id + " < " + Protocol.esc(line));
        List<String> f = Protocol.fields(line);
        if (f.isEmpty()) {
            return true; // blank lines are ignored
        }
        String cmd = f.get(0);
        if (cmd.equals("IAMAT") && f.size() == 4 && Protocol.parseLocation(f.get(2)) != null) {
            Protocol.ClientTime time = Protocol.parseTime(f.get(3));
            if (time != null) {
                Instant now = Instant.now();
                String at = "AT " + server.name + " " + Protocol.formatDiff(now.getEpochSecond(), now.getNano(), time)
                        + " " + f.get(1) + " " + f.get(2) + " " + f.get(3);
                if (at.length() > Protocol.MAX_PEER_LINE) {
                    return invalidLine(line); // its AT line could not travel to the neighbours
                }
                log.event("client#" + id + " > " + Protocol.esc(at));
                if (server.store.update(f.get(1), time, at)) {
                    server.flood(at, null); // into the neighbours' sockets before the reply is queued
                }
                reply((at + "\n").getBytes(StandardCharsets.ISO_8859_1));
                return true;
            }
        }
        if (cmd.equals("WHATSAT") && f.size() == 4) {
            String radius = Protocol.radiusMetres(f.get(2));
            int bound = Protocol.parseBound(f.get(3));
            if (radius != null && bound > 0) {
                server.catchUpWithPeers(); // peers before clients, as the Rust loop's phases are
                Store.Position known = server.store.get(f.get(1));
                if (known != null) {
                    Protocol.Coords coords = Protocol.parseLocation(Protocol.fields(known.atLine()).get(4));
                    if (coords != null) {
                        whatsat(known.atLine(), coords, radius, bound);
                        return true;
                    }
                }
            }
        }
        return invalidLine(line);
    }

    private boolean invalidLine(String line) {
        String reply = Protocol.invalid(line);
        server.log.event("client#" + id + " > " + Protocol.esc(reply.substring(0, reply.length() - 1)));
        reply(reply.getBytes(StandardCharsets.ISO_8859_1));
        return true;
    }

    private void whatsat(String atLine, Protocol.Coords coords, String radius, int bound) {
        long request;
        synchronized (this) {
            if (waiting >= MAX_WAITING) {
                String json = PlacesReply.errorJson(
                        "too many WHATSATs waiting for Places on this connection", "UNKNOWN_ERROR");
                server.log.event("client#" + id + " > " + Protocol.esc(atLine) + " (+ error JSON: too many waiting)");
                reply((atLine + "\n" + json).getBytes(StandardCharsets.ISO_8859_1));
                return;
            }
            // What this read answered before the WHATSAT leaves first: the
            // answer may come back (on another thread) before the read ends.
            sendBatch();
            request = server.places.nextRequest();
            held.addLast(new Slot(request, null));
            waiting++;
        }
        server.places.start(this, request, atLine, coords, radius, bound);
    }

    /** A reply in request order: into the batch, or behind a waiting WHATSAT. */
    private synchronized void reply(byte[] bytes) {
        if (closed) {
            return;
        }
        if (held.isEmpty()) {
            batch.writeBytes(bytes);
        } else {
            held.addLast(new Slot(0, bytes));
            heldBytes += bytes.length;
        }
    }

    /** deliver_answer: a Places worker brings an answer; false if the client has gone. */
    boolean placesAnswered(long request, byte[] reply, String atLine) {
        synchronized (this) {
            if (closed) {
                return false;
            }
            server.log.event("client#" + id + " > " + Protocol.esc(atLine) + " (+ Places JSON, " + reply.length
                    + " bytes)");
            for (Slot s : held) {
                if (s.request == request) {
                    s.reply = reply;
                    heldBytes += reply.length;
                    waiting--;
                    break;
                }
            }
            while (!held.isEmpty() && held.peekFirst().reply != null) {
                Slot s = held.pollFirst();
                batch.writeBytes(s.reply);
                heldBytes -= s.reply.length;
            }
        }
        flush();
        return true;
    }

    private void sendBatch() { // with this locked
        if (batch.size() > 0 && out != null) {
            out.send(batch.toByteArray(), MAX_BACKLOG);
            batch.reset();
        }
    }

    /**
     * Writes the batch; enforces the backlog bound; closes once the client
     * has half-closed and nothing more is owed. False if the connection closed.
     */
    private boolean flush() {
        String why = null;
        boolean finish = false;
        synchronized (this) {
            if (closed) {
                return false;
            }
            sendBatch();
            if (out.unsent() + heldBytes > MAX_BACKLOG) {
                why = "over 1 MiB of replies left unread";
            } else if (eof && held.isEmpty()) {
                closed = true;
                finish = true;
            }
        }
        if (why != null) {
            close(why);
            return false;
        }
        if (finish) {
            server.log.event("client#" + id + " " + addr + " closed: done after EOF");
            out.closeWhenDrained(); // the socket closes once the writer is done
            return false;
        }
        return true;
    }

    /** Closes at once: what is unsent is dropped (the client broke the contract, or left). */
    void close(String why) {
        synchronized (this) {
            if (closed) {
                return;
            }
            closed = true;
            held.clear();
            batch.reset();
        }
        server.log.event("client#" + id + " " + addr + " closed: " + why);
        if (out != null) {
            out.close();
        }
        closeSocket();
    }

    private void closeSocket() {
        try {
            socket.close();
        } catch (IOException e) {
            // closed anyway
        }
    }
}
