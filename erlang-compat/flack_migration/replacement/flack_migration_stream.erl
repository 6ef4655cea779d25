%% flack_migration's stand-in for the ORIGINAL flack's `chat_stream`.
%%
%% It is a module of its own here (flack_migration_stream) and takes the
%% name `chat_stream` only when it is built for installation (the build
%% rewrites its -module line: bin/flack-migration, tests/compat_app.rs),
%% since hot code loading replaces a module by its name.
%%
%% Written for this project from the original's documented behaviour (the
%% four calls its websocket sessions make and the gproc registrations and
%% records they produce); none of the original's code is in it. The
%% flack_migration application hot-loads it in place of the original's
%% module while the application runs, and puts the original's object code
%% back when it stops (see flack_migration_code). It is never on a code
%% path: it is compiled into the application's priv/ and shipped as a
%% binary, so a restarted node always boots with its own chat_stream.
%%
%% What differs from the original, and why:
%%  - Sequence numbers come from the gproc counter {c,g,{flack_seq,Chat}}
%%    that the Rust nodes increment (flack_migration_seq:next/1) instead of
%%    the constant 42, so users on every node see one numbering per chat.
%%  - leave/2 removes the membership before it sends `user_left` (to the
%%    members it had just looked up, the leaver included), so a node that
%%    sees the leaver's node go down right after no longer lists it and
%%    does not announce it a second time (flack_migration_watch).
%%  - join/3 skips members whose user registration vanished between the
%%    lookup and the read (they died); the original's session crashed.
%%  - When the last member leaves, the chat's counters are released, as a
%%    Rust node does, so the registry does not keep one per chat ever used.
%% Everything else (keys, values, attributes, records, return values) is
%% what the original's sessions and the Rust nodes expect.
-module(flack_migration_stream).

-export([register_user/2, join/3, post/1, leave/2]).

-spec register_user(binary(), binary()) -> new | updated.
register_user(UserName, UserId) ->
    gproc:ensure_reg({n, g, self()}, undefined,
                     [{username, UserName}, {user_id, UserId}]).

-spec join(binary(), binary(), binary()) -> [{binary(), binary()}].
join(Chat, UserName, UserId) ->
    Key = {p, g, Chat},
    Before = gproc:lookup_pids(Key),
    gproc:reg(Key),
    Joined = {user_joined, Chat, UserName, UserId, timestamp(), sequence(Chat)},
    gproc:send(Key, Joined),
    lists:append([member(Pid) || Pid <- Before]).

-spec post(tuple()) -> tuple().
post({chat_message, Chat, _UserId, _MimeType, _Text, _Ts, _Seq} = Message) ->
    Numbered = setelement(7, setelement(6, Message, timestamp()), sequence(Chat)),
    gproc:send({p, g, Chat}, Numbered).

-spec leave(binary(), binary()) -> true.
leave(Chat, UserId) ->
    Key = {p, g, Chat},
    Members = gproc:lookup_pids(Key),
    Left = {user_left, Chat, UserId, timestamp(), sequence(Chat)},
    Unregistered = (catch gproc:unreg(Key)),
    [Pid ! Left || Pid <- Members],
    release_if_empty(Chat),
    Unregistered =:= true orelse error(badarg),
    true.

%% Internals

member(Pid) ->
    try gproc:get_attributes({n, g, Pid}, Pid) of
        Attrs ->
            [{proplists:get_value(username, Attrs),
              proplists:get_value(user_id, Attrs)}]
    catch
        error:badarg -> []
    end.

%% The chat's next number. Should flack_migration be half gone (it is
%% being stopped and this process still ran this code), the original's
%% number: a session must never crash because of us.
sequence(Chat) ->
    try
        flack_migration_seq:next(Chat)
    catch
        _:_ -> 42
    end.

release_if_empty(Chat) ->
    try
        flack_migration_seq:release_if_empty(Chat)
    catch
        _:_ -> ok
    end.

timestamp() ->
    {{Y, Mo, D}, {H, Mi, S}} = erlang:universaltime(),
    iolist_to_binary(io_lib:format("~4..0w-~2..0w-~2..0wT~2..0w:~2..0w:~2..0wZ",
                                   [Y, Mo, D, H, Mi, S])).
