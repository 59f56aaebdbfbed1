package herd;

import java.io.IOException;
import java.nio.channels.SocketChannel;

/**
 * The connection we dialed to a neighbour (herd.py's PeerOut), served by its
 * link's thread: it carries our updates and PINGs; the neighbour answers
 * WELCOME or REFUSED, then PONGs.
 */
final class PeerOut extends PeerConn {
    private final Link link;
    private final long greetingDeadline = System.nanoTime() + LINK_TIMEOUT_NS;
    private volatile boolean up;
    private long nextPing;
    private long pingsSent;
    private long pongs;

    PeerOut(Server server, Link link, long id, SocketChannel channel) throws IOException {
        super(server, id, channel);
        this.link = link;
    }

    @Override
    String label() {
        return "peer-out " + link.name + "#" + id;
    }

    @Override
    String heartbeats() {
        return up ? " (" + pingsSent + " PINGs sent, " + pongs + " PONGs received)" : "";
    }

    @Override
    boolean lineReceived(String line) {
        Protocol.PeerLine msg = Protocol.parsePeerLine(line);
        if (msg.kind() == Protocol.Kind.PONG) {
            pongs++;
            return true;
        }
        server.log.event(label() + " < " + Protocol.esc(line));
        switch (msg.kind()) {
            case WELCOME -> {
                if (msg.text().equals(link.name) && !up) {
                    up = true;
                    nextPing = System.nanoTime() + HEARTBEAT_NS;
                    pingsSent++; // the catch-up ends with one
                    link.linkUp(this);
                }
            }
            case REFUSED -> close("refused: " + Protocol.esc(msg.text()));
            case BLANK -> { }
            default -> server.log.event("peer-out " + link.name + ": unexpected line ignored");
        }
        return !isClosed();
    }

    @Override
    void endOfInput() {
        close("closed by the neighbour");
    }

    @Override
    long tick(long now) {
        if (!up) {
            if (now >= greetingDeadline) {
                close("timed out");
            }
            return Math.max(1, (greetingDeadline - now) / 1_000_000L);
        }
        if (now - lastHeard > SILENCE_NS) {
            close("silent too long");
            return 1;
        }
        if (now >= nextPing) {
            pingsSent++;
            if (send("PING\n".getBytes(java.nio.charset.StandardCharsets.ISO_8859_1))) {
                close("peer output backlog over its bound");
                return 1;
            }
            nextPing = now + HEARTBEAT_NS;
        }
        return Math.max(1, (nextPing - now) / 1_000_000L);
    }

    @Override
    void closed(String why) {
        // The link's thread, back from serve(), backs off with closeReason().
    }
}
