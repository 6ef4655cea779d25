%% Erlang side of flack's node compatibility tests (tests/node_*.rs).
%%
%% agent(RustNode) runs on a real erl node: it registers as `agent`, tells
%% the Rust test controller ({test_ctl, RustNode}) that it is up, then does
%% what the controller asks and forwards everything else it receives
%% (messages, 'DOWN's, 'EXIT's) to the controller as {agent_got, Msg}.
%%
%% Commands: {cmd, From, Ref, Cmd} -> From ! {Ref, Result}.
%% monitor_many and spawn_burst load a peer for the hardening tests
%% (tests/hardening_dist.rs).
-module(flack_compat).
-export([agent/1, waiter/1]).

agent([RustNode]) -> agent(RustNode);
agent(RustNode) when is_list(RustNode) -> agent(list_to_atom(RustNode));
agent(RustNode) ->
    %% Never outlive a test that forgot us.
    timer:apply_after(180000, erlang, halt, []),
    register(agent, self()),
    process_flag(trap_exit, true),
    Up = net_kernel:connect_node(RustNode),
    {test_ctl, RustNode} ! {agent_up, self(), node(), Up},
    loop(RustNode).

loop(Rust) ->
    receive
        {cmd, From, Ref, Cmd} ->
            Result = try run(Cmd) catch C:R -> {caught, C, R} end,
            From ! {Ref, Result},
            loop(Rust);
        Other ->
            {test_ctl, Rust} ! {agent_got, Other},
            loop(Rust)
    end.

run({ping, Node}) -> net_adm:ping(Node);
run({send, Dest, Msg}) -> Dest ! Msg, ok;
run({monitor, Target}) -> erlang:monitor(process, Target);
run({demonitor, Ref}) -> erlang:demonitor(Ref, [flush]);
run({link, Pid}) -> link(Pid);
run({unlink, Pid}) -> unlink(Pid);
run({exit, Pid, Reason}) -> exit(Pid, Reason);
run({spawn_waiter, Linked}) ->
    Agent = self(),
    case Linked of
        true -> spawn_link(?MODULE, waiter, [Agent]);
        false -> spawn(?MODULE, waiter, [Agent])
    end;
run({spawn_waiter_linked_to, Pid}) ->
    Agent = self(),
    W = spawn(?MODULE, waiter, [Agent]),
    W ! {link_to, Pid},
    receive {linked, W} -> W after 5000 -> timeout end;
run(nodes) -> lists:sort(nodes());
run({nodes, Kind}) -> lists:sort(nodes(Kind));
run({rpc, Node, M, F, A}) -> rpc:call(Node, M, F, A, 5000);
run({erpc, Node, M, F, A}) -> try erpc:call(Node, M, F, A, 5000) catch C:R -> {C, R} end;
run({disconnect, Node}) -> erlang:disconnect_node(Node);
run({connect, Node}) -> net_kernel:connect_node(Node);
run({whereis, Name}) -> whereis(Name);
run({register, Name, Pid}) -> register(Name, Pid);
run({global_sync, Timeout}) ->
    Self = self(),
    P = spawn(fun() -> global:sync(), Self ! {synced, self()} end),
    receive {synced, P} -> ok after Timeout -> exit(P, kill), timeout end;
run({bench_recv, N}) ->
    %% Count N messages arriving at the agent's mailbox, return microseconds.
    T0 = erlang:monotonic_time(microsecond),
    bench_recv(N),
    erlang:monotonic_time(microsecond) - T0;
run({bench_send, Dest, N, Payload}) ->
    T0 = erlang:monotonic_time(microsecond),
    bench_send(Dest, N, Payload),
    erlang:monotonic_time(microsecond) - T0;
run({bench_echo, N}) ->
    %% Echo N {ping, From, I} messages back as {pong, I}.
    bench_echo(N);
run({bench_rtt, Dest, N}) ->
    T0 = erlang:monotonic_time(microsecond),
    bench_rtt(Dest, N),
    erlang:monotonic_time(microsecond) - T0;
run({spawn_echo_on, Node}) ->
    spawn(Node, fun() -> echo_loop() end);
run({spawn_sink_on, Node}) ->
    spawn(Node, fun() -> sink_loop(0) end);
run({monitor_many, Target, N}) ->
    %% N monitors of one remote process, held by a process that waits, so
    %% the peer's table holds N entries for this node.
    Self = self(),
    P = spawn(fun() ->
                      _ = [erlang:monitor(process, Target) || _ <- lists:seq(1, N)],
                      Self ! {monitored, self()},
                      receive stop -> ok end
              end),
    receive {monitored, P} -> ok after 60000 -> timeout end;
run({spawn_burst, Node, N}) ->
    %% N spawn requests to Node at once, then count the replies and 'DOWN's.
    Reqs = [erlang:spawn_request(Node, erlang, node, [], [monitor]) || _ <- lists:seq(1, N)],
    _ = Reqs,
    count_spawns(N, 0, 0);
run({eval, Text}) ->
    %% An Erlang expression sequence, for tests that need funs (global).
    {ok, Tokens, _} = erl_scan:string(Text),
    {ok, Exprs} = erl_parse:parse_exprs(Tokens),
    {value, Value, _} = erl_eval:exprs(Exprs, erl_eval:new_bindings()),
    Value;
run(halt) -> erlang:halt();
run(Other) -> {unknown_command, Other}.

count_spawns(N, Replies, Downs) when Replies >= N, Downs >= N -> {Replies, Downs};
count_spawns(N, Replies, Downs) ->
    receive
        {spawn_reply, _, ok, _} -> count_spawns(N, Replies + 1, Downs);
        {spawn_reply, _, error, _} -> count_spawns(N, Replies + 1, Downs + 1);
        {'DOWN', _, process, _, _} -> count_spawns(N, Replies, Downs + 1)
    after 30000 -> {Replies, Downs}
    end.

bench_recv(0) -> ok;
bench_recv(N) -> receive {bench, _} -> bench_recv(N - 1) end.

bench_send(_, 0, _) -> ok;
bench_send(Dest, N, P) -> Dest ! {bench, P}, bench_send(Dest, N - 1, P).

bench_echo(0) -> ok;
bench_echo(N) -> receive {ping, From, I} -> From ! {pong, I}, bench_echo(N - 1) end.

bench_rtt(_, 0) -> ok;
bench_rtt(Dest, N) ->
    Dest ! {ping, self(), N},
    receive {pong, N} -> bench_rtt(Dest, N - 1) end.

echo_loop() -> receive {ping, From, I} -> From ! {pong, I}, echo_loop() end.

sink_loop(N) ->
    receive
        {bench, _} -> sink_loop(N + 1);
        {count, From, Target} when N >= Target -> From ! {counted, N}, sink_loop(N);
        {count, _, _} = M -> self() ! M, receive {bench, _} -> sink_loop(N + 1) end
    end.

%% A process that waits: {stop, Reason} ends it with Reason; {link_to, Pid}
%% links it to Pid. Tells the agent when it ends.
waiter(Agent) ->
    receive
        {stop, Reason} -> exit(Reason);
        {link_to, Pid} -> link(Pid), Agent ! {linked, self()}, waiter(Agent);
        _ -> waiter(Agent)
    end.
