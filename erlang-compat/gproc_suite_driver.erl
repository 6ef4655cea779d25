%% Runs gproc 0.8.0's own distributed tests (test/gproc_dist_tests.erl,
%% compiled at test time from the fetched gproc with -DTEST +export_all)
%% against a cluster of three Erlang nodes and, optionally, one Rust flack
%% node, for tests/gproc_suite.rs.
%%
%% It runs on a non-candidate "master" node, as gproc's own eunit suite
%% does, and starts the three Erlang candidates with slave:start/3. The
%% Rust node is started and stopped by the Rust harness, which this driver
%% talks to through stdout/stdin, one line each:
%%
%%   @@start_rust        the harness starts the Rust node and answers "go"
%%                       once it is leader (mode leader) or follower
%%   @@kill_rust         the harness kills the Rust node and answers "go"
%%   @@result Test ok Ms | @@result Test fail Ms Reason
%%   @@done
%%
%% With the environment variable FLACK_GPROC_CAPTURE set to a directory,
%% each group also records, in <Group>.etf, what the leader's gproc_dist
%% received (calls, casts, candidates going down or joining) and sent
%% (broadcasts, replies, messages to processes, snapshots), as
%% term_to_binary of [{in, Msg} | {out, To, Msg}] in trace order: the test
%% vectors of tests/gproc_transcripts.rs. (The leader is the one of the
%% start; in t_master_dies it is the one that stops.)
%%
%% Modes: erlang (candidates = the three Erlang nodes), follower (the Rust
%% node sorts last and joins an Erlang-led cluster), leader (the Rust node
%% sorts first and leads before any Erlang node starts gproc).
%%
%% Groups mirror the suite's `foreach`: the 26 basic tests share one
%% setup, and each of t_sync_cand_dies, t_fail_node, t_master_dies gets a
%% fresh cluster.
-module(gproc_suite_driver).
-export([main/1, rpc_node/2, stop_gproc/1]).

-define(BASIC, [t_simple_reg, t_simple_reg_other, t_simple_ensure,
                t_simple_ensure_other, t_simple_reg_or_locate,
                t_simple_counter, t_aggr_counter, t_awaited_aggr_counter,
                t_simple_resource_count, t_awaited_resource_count,
                t_resource_count_on_zero, t_update_counters,
                t_shared_counter, t_prop, t_mreg, t_await_reg,
                t_await_self, t_await_reg_exists, t_give_away, t_sync,
                t_monitor, t_standby_monitor, t_standby_monitor_unreg,
                t_follow_monitor, t_monitor_demonitor, t_subscribe]).
-define(KILL, [t_sync_cand_dies, t_fail_node, t_master_dies]).
%% Generous: a stalled test should show as a timeout, not hang the run.
-define(TEST_TIMEOUT, 20000).

main([Mode, Stem, Rust, Groups]) ->
    %% Never outlive a harness that died.
    timer:apply_after(1800000, erlang, halt, [3]),
    persistent_term:put(gproc_suite_rust, list_to_atom(Rust)),
    persistent_term:put(gproc_suite_mode, list_to_atom(Mode)),
    Names = [list_to_atom(N ++ Stem) || N <- ["n1", "n2", "n3"]],
    Selected = [list_to_atom(G) || G <- string:lexemes(Groups, ",")],
    try
        lists:foreach(fun(Group) -> group(Group, Names) end, Selected)
    catch C:R:St ->
            say("@@error ~0p", [{C, R, St}])
    end,
    say("@@done", []),
    erlang:halt(0).

group(basic, Names) ->
    with_cluster(Names, fun(Ns) ->
                                Capture = start_capture(Ns, basic),
                                [run(T, Ns) || T <- ?BASIC],
                                stop_capture(Capture)
                        end);
group(join, Names) ->
    %% One setup only, for the join-stall loop of tests/gproc_suite.rs:
    %% report whether every node came to know the leader.
    T0 = erlang:monotonic_time(millisecond),
    Result = try setup(Names), ok
             catch C:R ->
                     %% What each node's gen_leader was doing, for the report.
                     {C, R, [{N, catch sys:get_status({gproc_dist, N}, 2000)}
                             || N <- persistent_term:get(gproc_suite_started, [])]}
             end,
    Ms = erlang:monotonic_time(millisecond) - T0,
    report(join, Result, Ms),
    cleanup(Names);
group(Test, Names) ->
    case lists:member(Test, ?KILL) of
        true -> with_cluster(Names, fun(Ns) ->
                                             Capture = start_capture(Ns, Test),
                                             run(Test, Ns),
                                             stop_capture(Capture)
                                     end);
        false -> erlang:error({unknown_group, Test})
    end.

with_cluster(Names, Fun) ->
    try
        Ns = setup(Names),
        persistent_term:put(gproc_suite_ns, Ns),
        Fun(Ns)
    after
        cleanup(Names)
    end.

%% ------------------------------------------------------------------
%% Setup: like gproc_dist_tests:dist_setup/0, with the Rust node added to
%% the candidate list and started at the point the mode needs.

candidates(Ns) ->
    case persistent_term:get(gproc_suite_mode) of
        erlang -> Ns;
        _ -> Ns ++ [persistent_term:get(gproc_suite_rust)]
    end.

setup(Names) ->
    Mode = persistent_term:get(gproc_suite_mode),
    Rust = persistent_term:get(gproc_suite_rust),
    Mode == leader andalso harness("@@start_rust"),
    Ns = [start_slave(N) || N <- Names],
    persistent_term:put(gproc_suite_started, Ns),
    [H | T] = Ns,
    _ = [rpc:call(H, net_adm, ping, [N]) || N <- T],
    Cands = candidates(Ns),
    {[ok, ok, ok], []} = rpc:multicall(Ns, application, set_env,
                                       [gproc, gproc_dist, Cands]),
    {[ok, ok, ok], []} = rpc:multicall(Ns, application, start, [gproc]),
    %% The Rust node must lead in leader mode; otherwise any agreed leader
    %% will do (leadership is sticky, so it depends on who started first).
    Expected = case Mode of leader -> Rust; _ -> any end,
    wait_leader(Ns, Expected, 200),
    Mode == follower andalso harness("@@start_rust"),
    %% Everyone, the Rust node included, has caught up.
    [true = rpc:call(N, gproc_dist, sync, []) || N <- Ns],
    Ns.

wait_leader(Ns, Expected, 0) ->
    erlang:error({no_leader, Expected, [{N, leader_of(N)} || N <- Ns]});
wait_leader(Ns, Expected, Tries) ->
    case lists:usort([leader_of(N) || N <- Ns]) of
        [Expected] -> ok;
        [L] when Expected == any, is_atom(L), L =/= undefined, L =/= timeout -> ok;
        _ -> timer:sleep(100), wait_leader(Ns, Expected, Tries - 1)
    end.

leader_of(N) ->
    %% gen_leader:call has a 5 s default; a stalled join shows as 'timeout'.
    case catch rpc:call(N, gen_leader, call, [gproc_dist, get_leader, 1000], 2000) of
        {'EXIT', _} -> undefined;
        Other -> Other
    end.

cleanup(_Names) ->
    [peer:stop(Peer) || Peer <- get_peers()],
    put(gproc_suite_peers, []),
    case persistent_term:get(gproc_suite_mode) of
        erlang -> ok;
        _ -> harness("@@kill_rust")
    end,
    ok.

get_peers() ->
    case get(gproc_suite_peers) of
        undefined -> [];
        Peers -> Peers
    end.

%% gproc's suite uses slave:start/3, which reaches a host named
%% 'localhost' through rsh; peer (OTP 25) starts the same kind of node
%% directly.
start_slave(Name) ->
    Paths = lists:append([["-pa", P] || P <- code:get_path(),
                                        not lists:prefix(code:root_dir(), P)]),
    {ok, Peer, Node} =
        peer:start(#{name => Name, host => atom_to_list(host()),
                     args => ["-setcookie", atom_to_list(erlang:get_cookie()),
                              "-kernel", "logger_level", "error" | Paths]}),
    put(gproc_suite_peers, [Peer | get_peers()]),
    Node.

host() ->
    [_, Host] = string:split(atom_to_list(node()), "@"),
    list_to_atom(Host).

%% ------------------------------------------------------------------
%% Hooks the adapted kill tests call instead of rpc'ing into the leader.

%% t_sync_cand_dies runs sync() on the leader; when the leader is the Rust
%% node (no rpc there), it runs it on an Erlang node other than the
%% suspended one, which makes the Rust leader coordinate it.
rpc_node(Leader, Other) ->
    Ns = persistent_term:get(gproc_suite_ns),
    case lists:member(Leader, Ns) of
        true -> Leader;
        false -> hd(Ns -- [Other])
    end.

%% t_master_dies stops gproc on the leader; the Rust leader is killed.
stop_gproc(Node) ->
    case lists:member(Node, persistent_term:get(gproc_suite_ns)) of
        true -> rpc:call(Node, application, stop, [gproc]);
        false ->
            erlang:monitor_node(Node, true),
            harness("@@kill_rust"),
            receive {nodedown, Node} -> ok after 10000 -> still_up end,
            report_reelection()
    end.

%% How long the Erlang nodes take to agree on a new leader; when it is
%% slow, what each gen_leader was doing (for the harness's log).
report_reelection() ->
    Ns = persistent_term:get(gproc_suite_ns),
    T0 = erlang:monotonic_time(millisecond),
    Agreed = wait_agreement(Ns, T0 + 20000),
    Ms = erlang:monotonic_time(millisecond) - T0,
    say("@@info reelection ~p ms, leaders ~0p", [Ms, Agreed]),
    Ms > 2000 andalso
        say("@@info states ~0P",
            [[{N, catch rpc:call(N, sys, get_state, [gproc_dist, 1000], 2000)} || N <- Ns], 60]),
    ok.

wait_agreement(Ns, Deadline) ->
    Leaders = [leader_of(N) || N <- Ns],
    case lists:usort(Leaders) of
        [L] when is_atom(L), L =/= undefined, L =/= timeout -> Leaders;
        _ ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> Leaders;
                false -> timer:sleep(50), wait_agreement(Ns, Deadline)
            end
    end.

%% ------------------------------------------------------------------
%% Capture of the leader's traffic (FLACK_GPROC_CAPTURE).

start_capture(Ns, Group) ->
    case os:getenv("FLACK_GPROC_CAPTURE") of
        false -> none;
        Dir ->
            File = filename:join(Dir, atom_to_list(Group) ++ ".etf"),
            Leader = rpc:call(hd(Ns), gproc_dist, get_leader, []),
            Self = self(),
            Tracer = spawn(Leader, fun() -> tracer(Self) end),
            receive {Tracer, tracing} -> ok after 5000 -> error(no_tracer) end,
            {File, Tracer}
    end.

stop_capture(none) ->
    ok;
stop_capture({File, Tracer}) ->
    Tracer ! {stop, self()},
    receive
        {Tracer, Events} ->
            ok = file:write_file(File, term_to_binary(Events)),
            say("@@captured ~p events", [length(Events)])
    after 10000 -> error(no_capture)
    end.

tracer(Driver) ->
    Pid = whereis(gproc_dist),
    erlang:trace(Pid, true, [send, 'receive']),
    Driver ! {self(), tracing},
    tracer_loop(Pid, []).

tracer_loop(Pid, Acc) ->
    receive
        {trace, Pid, 'receive', Msg} -> tracer_loop(Pid, keep_in(Msg, Acc));
        {trace, Pid, send, Msg, To} -> tracer_loop(Pid, keep_out(To, Msg, Acc));
        %% A message to a process that has died is still sent.
        {trace, Pid, send_to_non_existing_process, Msg, To} ->
            tracer_loop(Pid, keep_out(To, Msg, Acc));
        {stop, From} ->
            %% The leader may have stopped (t_master_dies).
            catch erlang:trace(Pid, false, [send, 'receive']),
            From ! {self(), lists:reverse(Acc)}
    end.

%% Only gproc_dist's own traffic: calls, casts, broadcasts, replies and
%% messages to processes; not gen_leader's election and timers.
keep_in({'$leader_call', _, _} = Msg, Acc) -> [{in, Msg} | Acc];
keep_in({'$leader_cast', _} = Msg, Acc) -> [{in, Msg} | Acc];
keep_in({'$gen_call', _, sync} = Msg, Acc) -> [{in, Msg} | Acc];
%% A candidate's gproc_dist went down (handle_DOWN), or joins.
keep_in({ldr, 'DOWN', _} = Msg, Acc) -> [{in, Msg} | Acc];
keep_in({isLeader, _, _} = Msg, Acc) -> [{in, Msg} | Acc];
keep_in({notNorm, _, _} = Msg, Acc) -> [{in, Msg} | Acc];
keep_in(_, Acc) -> Acc.

keep_out(To, {from_leader, _} = Msg, Acc) -> [{out, To, Msg} | Acc];
keep_out(To, {ldr, _, _, _, _, _} = Msg, Acc) -> [{out, To, Msg} | Acc];
keep_out(To, {_, {leader, reply, _}} = Msg, Acc) -> [{out, To, Msg} | Acc];
keep_out(To, Msg, Acc) when element(1, Msg) == gproc -> [{out, To, Msg} | Acc];
%% gen_server:reply/2 to a local sync() caller.
keep_out(To, {[alias | _], true} = Msg, Acc) -> [{out, To, Msg} | Acc];
keep_out(_, _, Acc) -> Acc.

%% ------------------------------------------------------------------

harness(Line) ->
    say("~s", [Line]),
    case io:get_line("") of
        "go\n" -> true;
        Other -> erlang:error({harness_said, Other})
    end.

run(Test, Ns) ->
    T0 = erlang:monotonic_time(millisecond),
    {Pid, MRef} =
        spawn_monitor(
          fun() ->
                  R = try gproc_dist_tests:Test(Ns) of
                          _ -> ok
                      catch C:E:St -> {C, E, St}
                      end,
                  exit({result, R})
          end),
    Result = receive
                 {'DOWN', MRef, _, _, {result, R}} -> R;
                 {'DOWN', MRef, _, _, Other} -> {exit, Other}
             after ?TEST_TIMEOUT ->
                     exit(Pid, kill),
                     timeout
             end,
    report(Test, Result, erlang:monotonic_time(millisecond) - T0).

report(Test, ok, Ms) ->
    say("@@result ~s ok ~p", [Test, Ms]);
report(Test, Failure, Ms) ->
    say("@@result ~s fail ~p ~0P", [Test, Ms, Failure, 40]).

say(Format, Args) ->
    io:format(standard_io, Format ++ "~n", Args).
